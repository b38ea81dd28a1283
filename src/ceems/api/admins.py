"""Admins from Grafana team members, synced every update cycle (CEEMS' `admin.grafana`)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from ceems.api.config import GrafanaTeamsConfig


class GrafanaError(Exception):
    """Grafana could not be asked for team members."""


@dataclass(frozen=True, slots=True)
class GrafanaTeams:
    """Logins of the members of the configured Grafana teams."""

    config: GrafanaTeamsConfig

    def members(self) -> list[str]:
        """Union of every team's member logins (`GET /api/teams/{id}/members`)."""
        logins: set[str] = set()
        with self.config.web().client() as client:
            for team in self.config.teams_ids:
                try:
                    response = client.get(f"/api/teams/{team}/members")
                except httpx.HTTPError as err:
                    raise GrafanaError(f"grafana team {team}: {err}") from err
                if response.status_code != 200:
                    raise GrafanaError(
                        f"grafana team {team}: HTTP {response.status_code}: {response.text[:200]}"
                    )
                try:
                    body = response.json()
                except ValueError as err:
                    raise GrafanaError(f"grafana team {team}: answer is not JSON") from err
                if not isinstance(body, list):
                    raise GrafanaError(f"grafana team {team}: expected a list of members")
                logins |= {m["login"] for m in body if isinstance(m, dict) and m.get("login")}
        return sorted(logins)
