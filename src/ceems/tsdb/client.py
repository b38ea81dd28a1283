"""A typed client of the Prometheus HTTP API (also answered by VictoriaMetrics and Thanos)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from ceems.common.httpconfig import HttpClientConfig
from ceems.tsdb.envelope import unwrap
from ceems.tsdb.errors import TsdbError
from ceems.tsdb.promql import format_duration
from ceems.tsdb.samples import Sample, SampleStream, parse_instant, parse_matrix
from ceems.tsdb.settings import TsdbSettings, apply_config, apply_flags

log = logging.getLogger(__name__)

# Longer parameter strings go in a POST form body: URLs past a few KiB are cut by proxies
# and refused by servers (Go's default header limit is 1 MiB, nginx's 8 KiB line buffer).
MAX_GET_PARAMS_BYTES = 2048

Params = list[tuple[str, str]]


def _time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at.isoformat()}: TSDB times must be timezone-aware")
    return f"{at.timestamp():.3f}"


def _redacted(url: str) -> str:
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url


def _match_window(matchers: Sequence[str], start: datetime | None, end: datetime | None) -> Params:
    """`match[]` selectors and an optional time window, as the metadata endpoints take them."""
    params: Params = [("match[]", m) for m in matchers]
    if start is not None:
        params.append(("start", _time(start)))
    if end is not None:
        params.append(("end", _time(end)))
    return params


class TsdbClient:
    """Prometheus HTTP API over one httpx client built from a `web:` config section."""

    def __init__(
        self, web: HttpClientConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        if not web.url:
            raise TsdbError("TSDB web.url is empty")
        self.url = _redacted(web.url)
        kwargs = web.client_kwargs()
        if transport is not None:
            kwargs["transport"] = transport
        self._http = httpx.Client(**kwargs)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> TsdbClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, method: str, path: str, params: Params) -> httpx.Response:
        encoded = urlencode(params)
        try:
            if method == "POST" or len(encoded) > MAX_GET_PARAMS_BYTES:
                return self._http.post(
                    path,
                    content=encoded.encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
            return self._http.get(path, params=encoded)
        except httpx.TimeoutException as err:
            raise TsdbError(
                f"TSDB {path}: no answer from {self.url} within {self._http.timeout.read}s "
                f"({type(err).__name__})"
            ) from err
        except httpx.HTTPError as err:
            raise TsdbError(f"TSDB {path}: cannot reach {self.url}: {err}") from err

    def _call(self, path: str, params: Params | None = None, *, method: str = "GET") -> Any:
        response = self._send(method, path, params or [])
        return unwrap(response, path)

    def ready(self) -> bool:
        """True when the TSDB answers `/-/ready` with 200 (False: unreachable or starting)."""
        try:
            response = self._http.get("/-/ready")
        except httpx.HTTPError as err:
            log.debug("TSDB not reachable", extra={"url": self.url, "err": str(err)})
            return False
        return response.status_code == 200

    def query(
        self, promql: str, at: datetime, *, lookback_delta: timedelta | None = None
    ) -> list[Sample]:
        """Evaluate an instant query at `at`; vector and scalar results.

        `lookback_delta` is honoured by Prometheus 2.43 and later (older ones ignore it).
        """
        params: Params = [("query", promql), ("time", _time(at))]
        if lookback_delta is not None:
            params.append(("lookback_delta", format_duration(lookback_delta)))
        return parse_instant(self._call("/api/v1/query", params))

    def query_range(
        self,
        promql: str,
        start: datetime,
        end: datetime,
        step: timedelta,
        *,
        lookback_delta: timedelta | None = None,
    ) -> list[SampleStream]:
        """Evaluate a range query over [start, end] every `step`."""
        params: Params = [
            ("query", promql),
            ("start", _time(start)),
            ("end", _time(end)),
            ("step", f"{step.total_seconds():.3f}"),
        ]
        if lookback_delta is not None:
            params.append(("lookback_delta", format_duration(lookback_delta)))
        return parse_matrix(self._call("/api/v1/query_range", params))

    def series(
        self, matchers: Sequence[str], start: datetime, end: datetime
    ) -> list[dict[str, str]]:
        """Label sets of the series matching any of `matchers` within [start, end]."""
        if not matchers:
            raise ValueError("series needs at least one matcher")
        params: Params = [("match[]", m) for m in matchers]
        params += [("start", _time(start)), ("end", _time(end))]
        data = self._call("/api/v1/series", params)
        if not isinstance(data, list):
            raise TsdbError(f"TSDB /api/v1/series: expected a list, got {data!r}")
        return [{str(k): str(v) for k, v in item.items()} for item in data]

    def labels(
        self,
        matchers: Sequence[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[str]:
        """Label names, of the series matching `matchers` when given."""
        params = _match_window(matchers, start, end)
        data = self._call("/api/v1/labels", params)
        if not isinstance(data, list):
            raise TsdbError(f"TSDB /api/v1/labels: expected a list, got {data!r}")
        return [str(name) for name in data]

    def label_values(
        self,
        name: str,
        matchers: Sequence[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[str]:
        """Values of label `name`, among the series matching `matchers` when given."""
        params = _match_window(matchers, start, end)
        data = self._call(f"/api/v1/label/{quote(name, safe='')}/values", params)
        if not isinstance(data, list):
            raise TsdbError(f"TSDB label values of {name}: expected a list, got {data!r}")
        return [str(value) for value in data]

    def delete_series(self, matchers: Sequence[str], start: datetime, end: datetime) -> None:
        """Delete the samples of matching series in [start, end] (admin API).

        Prometheus needs `--web.enable-admin-api`; it answers 204 and marks tombstones.
        """
        if not matchers:
            # Prometheus would refuse too; a matcher-less delete must never be attempted
            raise ValueError("delete_series needs at least one matcher")
        params: Params = [("match[]", m) for m in matchers]
        params += [("start", _time(start)), ("end", _time(end))]
        self._call("/api/v1/admin/tsdb/delete_series", params, method="POST")

    def settings(self) -> TsdbSettings:
        """Scrape and evaluation intervals, retention and query limits of the TSDB.

        What the TSDB does not report keeps Prometheus' default: an endpoint answering with
        an error (VictoriaMetrics has no /api/v1/status/config) degrades to the defaults; an
        unreachable TSDB raises.
        """
        settings = TsdbSettings()
        for path, apply in (
            ("/api/v1/status/config", self._apply_config),
            ("/api/v1/status/flags", self._apply_flags),
        ):
            try:
                data = self._call(path)
            except TsdbError as err:
                if err.status is None:
                    raise
                log.warning(
                    "TSDB settings endpoint unavailable, using defaults",
                    extra={"path": path, "status": err.status, "err": str(err)},
                )
                continue
            settings = apply(settings, data)
        return settings

    @staticmethod
    def _apply_config(settings: TsdbSettings, data: Any) -> TsdbSettings:
        yaml_text = data.get("yaml") if isinstance(data, dict) else None
        return apply_config(settings, yaml_text) if isinstance(yaml_text, str) else settings

    @staticmethod
    def _apply_flags(settings: TsdbSettings, data: Any) -> TsdbSettings:
        if not isinstance(data, dict):
            return settings
        return apply_flags(settings, {str(k): str(v) for k, v in data.items()})
