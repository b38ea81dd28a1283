"""The X-SLURM-USER-TOKEN for slurmrestd: given, read from a file, or minted (HS256)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jwt

from ceems.api.managers.protocol import ManagerError


def mint_token(key: bytes, user_name: str, now_s: int, lifetime_s: int) -> str:
    """A token as `scontrol token` makes it: HS256 over the claims iat, exp and sun."""
    claims = {"iat": now_s, "exp": now_s + lifetime_s, "sun": user_name}
    return jwt.encode(claims, key, algorithm="HS256")


@dataclass(slots=True)
class TokenSource:
    """One of: a fixed token, a token file (read each time), or SLURM's JWT key (minted).

    A minted token lives `lifetime_s` and is replaced once a quarter of its life is left,
    so no request goes out with a token about to expire.
    """

    cluster_id: str
    user_name: str
    token: str = ""
    token_file: str = ""
    jwt_key_file: str = ""
    lifetime_s: int = 300
    clock: Callable[[], float] = time.time
    _minted: str = field(default="", repr=False)
    _expires_s: float = 0.0

    def current(self) -> str:
        """The token to send now."""
        if self.token:
            return self.token
        if self.token_file:
            return self._read(self.token_file, "token").decode().strip()
        now = self.clock()
        if not self._minted or now >= self._expires_s - self.lifetime_s / 4:
            key = self._read(self.jwt_key_file, "JWT key")
            if not key:
                raise ManagerError(
                    f"cluster {self.cluster_id!r}: JWT key {self.jwt_key_file} is empty"
                )
            self._minted = mint_token(key, self.user_name, int(now), self.lifetime_s)
            self._expires_s = int(now) + self.lifetime_s
        return self._minted

    def _read(self, path: str, what: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as err:
            raise ManagerError(
                f"cluster {self.cluster_id!r}: cannot read slurmrestd {what} file {path}: "
                f"{err.strerror or err}"
            ) from err
