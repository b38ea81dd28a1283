"""HTTP GET of a JSON document with the standard library, every failure a ProviderError."""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

from ceems.emissions.provider import ProviderError

log = logging.getLogger(__name__)

# Real answers are a few kB; a bound keeps a misbehaving server from filling the node's memory.
MAX_BODY_BYTES = 1 << 20
USER_AGENT = "ceems-exporter"


class UnauthorisedError(ProviderError):
    """The API refused the token or credentials (HTTP 401 or 403)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _where(url: str) -> str:
    """The URL without its query, short enough for an error message."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def fetch_json(
    url: str,
    *,
    provider: str,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> object:
    """Decoded JSON body of a 2xx answer to GET `url`; names `provider` in every error."""
    where = _where(url)
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
    )
    log.debug("fetching emission factors", extra={"provider": provider, "url": where})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body: bytes = response.read(MAX_BODY_BYTES + 1)
            content_type = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        err.close()
        if err.code in (401, 403):
            raise UnauthorisedError(
                f"{provider}: unauthorised (HTTP {err.code} {err.reason}) at {where}:"
                " check the API token or credentials",
                err.code,
            ) from err
        raise ProviderError(f"{provider}: HTTP {err.code} {err.reason} from {where}") from err
    except urllib.error.URLError as err:
        # Connection failures arrive wrapped; a timeout while connecting is one of them.
        if isinstance(err.reason, TimeoutError):
            raise ProviderError(
                f"{provider}: no answer from {where} within {timeout_s:g} s"
            ) from err
        raise ProviderError(f"{provider}: cannot reach {where}: {err.reason}") from err
    except TimeoutError as err:  # the server accepted the connection but did not answer in time
        raise ProviderError(f"{provider}: no answer from {where} within {timeout_s:g} s") from err
    except (OSError, http.client.HTTPException) as err:  # reset connection, garbled status line
        raise ProviderError(f"{provider}: request to {where} failed: {err!r}") from err
    if len(body) > MAX_BODY_BYTES:
        raise ProviderError(
            f"{provider}: answer from {where} is larger than {MAX_BODY_BYTES} bytes"
        )
    try:
        return json.loads(body)
    except ValueError as err:  # also UnicodeDecodeError: an HTML error page, a truncated body
        raise ProviderError(
            f"{provider}: answer from {where} is not JSON"
            f" (Content-Type {content_type or 'unset'}): {err}"
        ) from err
