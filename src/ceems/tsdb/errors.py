"""The one exception of the TSDB client."""

from __future__ import annotations


class TsdbError(Exception):
    """A TSDB request failed.

    `status` is the HTTP status (None when no answer came: refused, timed out), and
    `error_type` / `error` are the Prometheus envelope's `errorType` and `error`
    (`bad_data`, `execution`, `timeout`, ...), empty when the answer had none.
    """

    def __init__(
        self, message: str, *, status: int | None = None, error_type: str = "", error: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.error = error
