"""`--start`/`--end`: the window in which a ceems_tool command looks for series."""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime, timedelta

DEFAULT_WINDOW = timedelta(hours=3)


def parse_time(text: str) -> datetime:
    """An argparse type: RFC 3339 with a time zone, or Unix seconds."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise argparse.ArgumentTypeError(f"invalid time {text!r}")
        return datetime.fromtimestamp(seconds, UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: expected RFC 3339 (2024-05-01T12:00:00Z) or Unix seconds"
        ) from err
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: give a time zone (Z or +02:00), RFC 3339 requires one"
        )
    return moment


def add_window_flags(parser: argparse.ArgumentParser) -> None:
    """Add `--start` and `--end` (default: the last 3 hours)."""
    parser.add_argument(
        "--start",
        type=parse_time,
        default=None,
        metavar="TIME",
        help="Look for series from TIME, RFC 3339 or Unix seconds (default: 3h before --end).",
    )
    parser.add_argument(
        "--end",
        type=parse_time,
        default=None,
        metavar="TIME",
        help="Look for series until TIME, RFC 3339 or Unix seconds (default: now).",
    )


def window(args: argparse.Namespace) -> tuple[datetime, datetime]:
    """(start, end) from the flags; ValueError when start is not before end."""
    end: datetime = args.end or datetime.now(UTC)
    start: datetime = args.start or end - DEFAULT_WINDOW
    if start >= end:
        raise ValueError(f"--start ({start.isoformat()}) is not before --end ({end.isoformat()})")
    return start, end
