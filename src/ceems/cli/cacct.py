"""`cacct`: a user's compute units with CPU/GPU usage, energy and emissions, like `sacct`."""

from __future__ import annotations

import argparse
import csv
import html
import io
import os
import pwd
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from pydantic import Field

from ceems.common.config import ConfigError, StrictModel, load_config
from ceems.common.durations import parse_duration
from ceems.common.httpconfig import HeaderValues, HttpClientConfig

CONFIG_ENV = "CEEMS_CACCT_CONFIG_FILE"
CONFIG_PATHS = (Path("~/.config/ceems/cacct.yml"), Path("/etc/ceems/cacct.yml"))
# Series of a unit written by --ts, as the recording rules name them.
TS_SERIES = (
    "uuid:ceems_cpu_usage:ratio_irate",
    "uuid:ceems_cpu_memory_usage:ratio",
    "uuid:ceems_host_power_watts:pue",
    "uuid:ceems_gpu_usage:ratio",
    "uuid:ceems_gpu_power_watts:pue",
)


class CacctError(Exception):
    """Something the user should read: a refusal, a bad option, an unreachable server."""


class CacctConfig(StrictModel):
    """cacct's config file: where the API server (and the TSDB, for --ts) are."""

    api: HttpClientConfig
    tsdb: HttpClientConfig | None = None
    cluster_id: str = ""
    time_zone: str = "UTC"
    user_header: str = "X-Grafana-User"
    extra: dict[str, str] = Field(default_factory=dict)


def find_config(explicit: str) -> Path:
    """The config file: --config, $CEEMS_CACCT_CONFIG_FILE, ~/.config/ceems, /etc/ceems."""
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get(CONFIG_ENV):
        candidates.append(Path(os.environ[CONFIG_ENV]))
    candidates += [p.expanduser() for p in CONFIG_PATHS]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise CacctError(f"no config file found (tried {tried}); ask your administrator")


def parse_time(text: str, zone: ZoneInfo, now: datetime) -> datetime:
    """`now`, `now-7d`, `2026-11-01`, `2026-11-01T08:00[:SS]` (in the configured zone)."""
    value = text.strip()
    if value == "now":
        return now
    if value.startswith("now-"):
        try:
            return now - parse_duration(value[4:])
        except ValueError as err:
            raise CacctError(f"bad time {text!r}: {err}") from err
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=zone)
        except ValueError:
            continue
    raise CacctError(f"bad time {text!r}: use now, now-7d, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]")


def current_user() -> str:
    """The login running cacct: the API trusts cacct's credentials, not a user's claim."""
    return pwd.getpwuid(os.getuid()).pw_name


@dataclass(frozen=True, slots=True)
class Query:
    """What the user asked for."""

    start: datetime
    end: datetime
    jobs: tuple[str, ...]
    user: str
    as_user: str
    cluster_id: str


def fetch_units(client: httpx.Client, query: Query, header: str) -> list[dict[str, Any]]:
    """Units from the API; asking for another user's goes through the admin endpoint."""
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("from", str(int(query.start.timestamp()))),
        ("to", str(int(query.end.timestamp()))),
    ]
    params += [("uuid", j) for j in query.jobs]
    if query.cluster_id:
        params.append(("cluster_id", query.cluster_id))
    path = "/api/v1/units"
    if query.as_user != query.user:
        path = "/api/v1/units/admin"
        params.append(("user", query.as_user))
    try:
        response = client.get(path, params=params, headers={header: query.user})
    except httpx.HTTPError as err:
        raise CacctError(f"cannot reach the CEEMS API server: {err}") from err
    if response.status_code == 403:
        raise CacctError(
            f"permission denied: {query.user} may list only their own jobs"
            + (f", not {query.as_user}'s" if query.as_user != query.user else "")
        )
    try:
        body = response.json()
    except ValueError as err:
        raise CacctError(f"API server answered HTTP {response.status_code}, not JSON") from err
    if response.status_code != 200 or body.get("status") != "success":
        raise CacctError(f"API server error: {body.get('error') or response.status_code}")
    data = body.get("data") or []
    return list(data) if isinstance(data, list) else []


def _total(unit: dict[str, Any], key: str) -> float:
    return float(sum((unit.get(key) or {}).values()))


def _avg(unit: dict[str, Any], key: str) -> float | None:
    values = list((unit.get(key) or {}).values())
    return float(values[0]) if values else None


def providers(units: Sequence[dict[str, Any]]) -> list[str]:
    """Emission providers present in any unit (keys like `rte_total`)."""
    keys: set[str] = set()
    for unit in units:
        for field in ("total_cpu_emissions_gms", "total_gpu_emissions_gms"):
            keys |= set((unit.get(field) or {}).keys())
    return sorted(k.removesuffix("_total") for k in keys)


def unit_rows(units: Sequence[dict[str, Any]], long: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the job table."""
    names = providers(units)
    header = ["JobID", "Cluster", "Account", "User", "Start", "End", "Elapsed", "State",
              "NCPUs", "NGPUs", "CPU%", "GPU%", "CPU kWh", "GPU kWh"]  # fmt: skip
    header += [f"gCO2e ({p})" for p in names]
    if long:
        header += ["Nodes", "Partition", "Provenance"]
    rows = []
    for unit in units:
        alloc = unit.get("allocation") or {}
        cpu, gpu = _avg(unit, "avg_cpu_usage"), _avg(unit, "avg_gpu_usage")
        row = [
            str(unit.get("uuid", "")), str(unit.get("cluster_id", "")),
            str(unit.get("project", "")), str(unit.get("username", "")),
            str(unit.get("started_at", "")), str(unit.get("ended_at", "")),
            str(unit.get("elapsed", "")), str(unit.get("state", "")),
            str(alloc.get("cpus", "")), str(alloc.get("gpus", "")),
            "" if cpu is None else f"{cpu:.1f}", "" if gpu is None else f"{gpu:.1f}",
            f"{_total(unit, 'total_cpu_energy_usage_kwh'):.4f}",
            f"{_total(unit, 'total_gpu_energy_usage_kwh'):.4f}",
        ]  # fmt: skip
        for name in names:
            grams = sum(
                (unit.get(f) or {}).get(f"{name}_total", 0.0)
                for f in ("total_cpu_emissions_gms", "total_gpu_emissions_gms")
            )
            row.append(f"{grams:.2f}")
        if long:
            tags = unit.get("tags") or {}
            provenance = unit.get("provenance") or {}
            row += [
                str(tags.get("nodelist", "")),
                str(tags.get("partition", "")),
                "; ".join(f"{k}={v}" for k, v in sorted(provenance.items())),
            ]
        rows.append(row)
    return header, rows


def summary_rows(units: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Per-account totals: jobs, CPU and GPU hours, energy, emissions."""
    names = providers(units)
    totals: dict[str, dict[str, float]] = {}
    for unit in units:
        account = totals.setdefault(str(unit.get("project", "")), {})
        times = unit.get("total_time_seconds") or {}
        account["jobs"] = account.get("jobs", 0) + 1
        account["cpu_h"] = account.get("cpu_h", 0) + times.get("alloc_cputime", 0) / 3600
        account["gpu_h"] = account.get("gpu_h", 0) + times.get("alloc_gputime", 0) / 3600
        account["kwh"] = (
            account.get("kwh", 0)
            + _total(unit, "total_cpu_energy_usage_kwh")
            + _total(unit, "total_gpu_energy_usage_kwh")
        )
        for name in names:
            for field in ("total_cpu_emissions_gms", "total_gpu_emissions_gms"):
                account[name] = account.get(name, 0) + (unit.get(field) or {}).get(
                    f"{name}_total", 0
                )
    header = ["Account", "Jobs", "CPU hours", "GPU hours", "kWh", *[f"gCO2e ({p})" for p in names]]
    rows = [
        [account, str(int(t["jobs"])), f"{t['cpu_h']:.2f}", f"{t['gpu_h']:.2f}", f"{t['kwh']:.4f}",
         *[f"{t.get(p, 0):.2f}" for p in names]]
        for account, t in sorted(totals.items())
    ]  # fmt: skip
    return header, rows


def render(header: list[str], rows: list[list[str]], fmt: str) -> str:
    """A table as text (aligned), CSV, Markdown or HTML."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    if fmt == "markdown":

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)]) + "\n"
    if fmt == "html":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]  # fmt: skip
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines) + "\n"


def write_time_series(
    config: CacctConfig, units: Sequence[dict[str, Any]], out_dir: Path, user: str
) -> list[Path]:
    """One CSV per unit (timestamp, series, value) from the TSDB, for `--ts`."""
    from ceems.tsdb.client import TsdbClient

    if config.tsdb is None:
        raise CacctError("--ts needs a `tsdb:` section in the cacct config")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    # Through ceems_lb the TSDB answers only for the user named in the user header.
    web = config.tsdb.model_copy(
        update={
            "http_headers": {
                **config.tsdb.http_headers,
                config.user_header: HeaderValues(values=[user]),
            }
        }
    )
    with TsdbClient(web) as client:
        for unit in units:
            start_ms, end_ms = (
                int(unit.get("started_at_ts") or 0),
                int(unit.get("ended_at_ts") or 0),
            )
            if not start_ms:
                continue
            start = datetime.fromtimestamp(start_ms / 1000, UTC)
            end = datetime.fromtimestamp(end_ms / 1000, UTC) if end_ms else datetime.now(UTC)
            step = max(timedelta(seconds=15), (end - start) / 1000)
            path = out_dir / f"{unit['uuid']}.csv"
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["timestamp", "series", "value"])
                for series in TS_SERIES:
                    selector = f'{series}{{uuid="{unit["uuid"]}"}}'
                    try:
                        streams = client.query_range(selector, start, end, step)
                    except Exception as err:
                        raise CacctError(f"TSDB query for {unit['uuid']} failed: {err}") from err
                    for stream in streams:
                        for at_ms, value in stream.points:
                            moment = datetime.fromtimestamp(at_ms / 1000, UTC)
                            writer.writerow([moment.isoformat(), series, value])
            written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    """Options, named after sacct's where they mean the same."""
    parser = argparse.ArgumentParser(
        prog="cacct",
        description="List your compute units with CPU/GPU usage, energy and emissions.",
    )
    parser.add_argument(
        "-S", "--starttime", default="", help="Start of the period (default: 00:00 today)."
    )
    parser.add_argument("-E", "--endtime", default="now", help="End of the period (default: now).")
    parser.add_argument("-j", "--job", action="append", default=[], help="Job id; repeatable.")
    parser.add_argument("-u", "--user", default="", help="Another user's jobs (admins only).")
    parser.add_argument(
        "-M", "--cluster", default="", help="Cluster id (default: from the config)."
    )
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--csv", dest="fmt", action="store_const", const="csv")
    fmt.add_argument("--markdown", dest="fmt", action="store_const", const="markdown")
    fmt.add_argument("--html", dest="fmt", action="store_const", const="html")
    parser.add_argument(
        "-l", "--long", action="store_true", help="Also nodes, partition, provenance."
    )
    parser.add_argument(
        "--ts", metavar="DIR", default="", help="Write each job's time series as CSV here."
    )
    parser.add_argument("--config", default="", help=f"Config file (default: ${CONFIG_ENV}, "
                        "~/.config/ceems/cacct.yml, /etc/ceems/cacct.yml).")  # fmt: skip
    return parser


def run(options: argparse.Namespace, now: datetime | None = None, user: str | None = None) -> str:
    """Do what the options ask and return the text to print."""
    try:
        config = load_config(find_config(options.config), CacctConfig)
    except ConfigError as err:
        raise CacctError(str(err)) from err
    zone = ZoneInfo(config.time_zone)
    now = now or datetime.now(zone)
    midnight = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    start = parse_time(options.starttime, zone, now) if options.starttime else midnight
    end = parse_time(options.endtime, zone, now)
    if start >= end:
        raise CacctError(f"--starttime ({start:%Y-%m-%d %H:%M}) is not before --endtime")
    login = user or current_user()
    query = Query(start, end, tuple(options.job), login, options.user or login,
                  options.cluster or config.cluster_id)  # fmt: skip
    with config.api.client() as client:
        units = fetch_units(client, query, config.user_header)
    fmt = options.fmt or "text"
    header, rows = unit_rows(units, options.long)
    text = render(header, rows, fmt)
    if fmt == "text":
        text += "\n" + render(*summary_rows(units), fmt)
    if options.ts:
        written = write_time_series(config, units, Path(options.ts), login)
        text += f"\nwrote {len(written)} time-series file(s) to {options.ts}\n"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; errors go to stderr with exit status 1."""
    options = build_parser().parse_args(argv)
    try:
        sys.stdout.write(run(options))
    except CacctError as err:
        print(f"cacct: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
