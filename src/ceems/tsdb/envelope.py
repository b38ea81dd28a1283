"""The Prometheus API's JSON envelope: `{"status", "data", "errorType", "error", "warnings"}`."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from ceems.tsdb.errors import TsdbError

log = logging.getLogger(__name__)

_BODY_EXCERPT = 200


def unwrap(response: httpx.Response, what: str) -> Any:
    """The `data` of a successful answer; anything else raises TsdbError.

    `what` names the request in messages (`query`, `series`, ...). A 204 (the admin API's
    success) has no body and gives None.
    """
    if response.status_code == 204:
        return None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        # not a Prometheus answer: a proxy's error page, an auth failure, a wrong URL
        excerpt = " ".join(response.text[:_BODY_EXCERPT].split())
        raise TsdbError(
            f"TSDB {what}: HTTP {response.status_code} without a Prometheus JSON body: {excerpt!r}",
            status=response.status_code,
            error=excerpt,
        )
    if body.get("status") != "success" or response.is_error:
        error_type = str(body.get("errorType") or "")
        error = str(body.get("error") or "")
        raise TsdbError(
            f"TSDB {what}: HTTP {response.status_code} {error_type or 'error'}: "
            f"{error or 'no error message'}",
            status=response.status_code,
            error_type=error_type,
            error=error,
        )
    if body.get("warnings"):
        log.warning(
            "TSDB answered with warnings", extra={"request": what, "warnings": body["warnings"]}
        )
    return body.get("data")
