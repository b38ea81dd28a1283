"""logfmt and JSON log rendering."""

from __future__ import annotations

import json
import logging

import pytest

from ceems.common.logging import JsonFormatter, LogfmtFormatter, setup_logging


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("ceems.test", logging.WARNING, "x.py", 7, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_logfmt_quotes_values_with_spaces() -> None:
    line = LogfmtFormatter().format(
        record("collector failed", collector="rapl", err="no such file")
    )
    assert "level=warn" in line
    assert 'msg="collector failed"' in line
    assert "collector=rapl" in line and 'err="no such file"' in line


def test_json_has_the_same_fields() -> None:
    fields = json.loads(JsonFormatter().format(record("listening", port=9010)))
    assert fields["msg"] == "listening" and fields["port"] == 9010 and fields["level"] == "warn"


@pytest.mark.parametrize(("level", "fmt"), [("loud", "logfmt"), ("info", "xml")])
def test_bad_settings_are_refused(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="one of"):
        setup_logging(level, fmt)
