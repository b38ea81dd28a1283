"""Node power from the BMC through an IPMI DCMI tool, sampled in the background.

Supported tools, in the order they are looked up on PATH: FreeIPMI `ipmi-dcmi`, OpenIPMI
`ipmitool`, `ipmiutil`, and Cray's `capmc`. A BMC answers in hundreds of milliseconds to
seconds and sometimes hangs, so the command runs in a sampler thread with a timeout and the
scrape serves the last good reading.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from ceems.exporter.collector import CollectorError, NodeContext
from ceems.exporter.sampler import BackgroundSampler

# Tool name on PATH -> arguments that print system power statistics.
TOOLS: dict[str, tuple[str, ...]] = {
    "ipmi-dcmi": ("--get-system-power-statistics",),
    "ipmitool": ("dcmi", "power", "reading"),
    "ipmiutil": ("dcmi", "power"),
    "capmc": ("get_system_power", "-w", "60"),
}


class PowerReadingError(ValueError):
    """The tool's output holds no usable power reading."""


@dataclass(frozen=True, slots=True)
class PowerReading:
    """BMC power statistics in watts."""

    current: float
    minimum: float
    maximum: float
    average: float


# (label in the tool's output, field) for FreeIPMI, ipmitool and ipmiutil; matched
# case-insensitively at the start of a line, value is the first number after the colon.
_TEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("current power", "current"),
    ("instantaneous power reading", "current"),
    ("minimum power over sampling duration", "minimum"),
    ("minimum during sampling period", "minimum"),
    ("min power over sample duration", "minimum"),
    ("maximum power over sampling duration", "maximum"),
    ("maximum during sampling period", "maximum"),
    ("max power over sample duration", "maximum"),
    ("average power over sampling duration", "average"),
    ("average power reading over sample period", "average"),
    ("avg power over sample duration", "average"),
)
_STATE_LINE = re.compile(
    r"^\s*(power measurement|power reading state is)\s*:?\s*(?P<state>\S+)", re.I
)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_dcmi_text(text: str) -> PowerReading:
    """Parse `ipmi-dcmi`, `ipmitool dcmi power reading` or `ipmiutil dcmi power` output.

    A BMC whose power measurement is not active reports zeros or stale numbers, so such a
    reading is refused rather than exported (CEEMS does the same).
    """
    values: dict[str, float] = {}
    active: bool | None = None
    for line in text.splitlines():
        if state := _STATE_LINE.match(line):
            active = state["state"].lower().startswith("activ")
            continue
        label, sep, rest = line.partition(":")
        if not sep:
            continue
        key = label.strip().lower()
        for prefix, field in _TEXT_FIELDS:
            if key == prefix and field not in values:
                number = _NUMBER.search(rest)
                if number is None:
                    raise PowerReadingError(f"no number in {line.strip()!r}")
                values[field] = float(number.group())
    if active is False:
        raise PowerReadingError("BMC reports power measurement as not active")
    if "current" not in values:
        raise PowerReadingError("no current power reading in the tool's output")
    current = values["current"]
    return PowerReading(
        current,
        values.get("minimum", current),
        values.get("maximum", current),
        values.get("average", current),
    )


def parse_capmc_json(text: str) -> PowerReading:
    """Parse `capmc get_system_power` JSON; it reports a window, so current is its average."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PowerReadingError(f"capmc output is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise PowerReadingError("capmc output is not a JSON object")
    if data.get("e", 0) != 0:
        raise PowerReadingError(f"capmc error {data.get('e')}: {data.get('err_msg', '')}")
    try:
        avg, low, high = (float(data[k]) for k in ("avg", "min", "max"))
    except (KeyError, TypeError, ValueError) as err:
        raise PowerReadingError(f"capmc output lacks numeric avg/min/max: {err}") from err
    return PowerReading(avg, low, high, avg)


def parse_power_output(tool: str, text: str) -> PowerReading:
    """Dispatch on the tool's name: capmc speaks JSON, the others text."""
    return parse_capmc_json(text) if tool == "capmc" else parse_dcmi_text(text)


def resolve_command(cmd: str | None) -> list[str]:
    """The configured command, or the first known tool found on PATH with its arguments."""
    if cmd:
        argv = shlex.split(cmd)
        if not argv:
            raise CollectorError("--collector.ipmi_dcmi.cmd: empty command")
        return argv
    for tool, args in TOOLS.items():
        path = shutil.which(tool)
        if path is not None:
            return [path, *args]
    raise CollectorError(
        f"--collector.ipmi_dcmi: none of {', '.join(TOOLS)} found on PATH; "
        "install one or set --collector.ipmi_dcmi.cmd"
    )


def tool_name(argv: Sequence[str]) -> str:
    """The power tool inside a command line that may start with `sudo` and its options."""
    for word in argv:
        name = Path(word).name
        if name in TOOLS:
            return name
    return Path(argv[0]).name


@dataclass(frozen=True, slots=True)
class PowerCommand:
    """Runs the tool once with a timeout and parses its output."""

    argv: tuple[str, ...]
    timeout_s: float

    def __call__(self) -> PowerReading:
        try:
            proc = subprocess.run(
                self.argv, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise PowerReadingError(f"{self.argv[0]} timed out after {self.timeout_s:g}s") from err
        except OSError as err:
            raise PowerReadingError(f"cannot run {self.argv[0]}: {err}") from err
        if proc.returncode != 0:
            raise PowerReadingError(
                f"{self.argv[0]} exited {proc.returncode}: {proc.stderr.strip()[:200]}"
            )
        return parse_power_output(tool_name(self.argv), proc.stdout)


@dataclass(frozen=True, slots=True)
class IpmiCollector:
    """Emits ceems_ipmi_dcmi_{current,min,max,avg}_watts from the last good BMC reading."""

    hostname: str
    sampler: BackgroundSampler[PowerReading]

    def samplers(self) -> Sequence[BackgroundSampler[Any]]:
        """The BMC sampler."""
        return [self.sampler]

    def close(self) -> None:
        """Stop sampling the BMC."""
        self.sampler.stop()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Serve the cached reading; raises NoDataError when it is missing or stale."""
        reading = self.sampler.latest().value
        for field, value, what in (
            ("avg", reading.average, "Average"),
            ("current", reading.current, "Current"),
            ("max", reading.maximum, "Maximum"),
            ("min", reading.minimum, "Minimum"),
        ):
            family = GaugeMetricFamily(
                f"ceems_ipmi_dcmi_{field}_watts",
                f"{what} Power consumption in watts",
                labels=["hostname"],
            )
            family.add_metric([self.hostname], value)
            yield family


@dataclass(frozen=True, slots=True)
class IpmiCollectorFactory:
    """Builds the ipmi_dcmi collector."""

    name: str = "ipmi_dcmi"
    enabled_by_default: bool = False
    description: str = "Node power from the BMC via ipmi-dcmi, ipmitool, ipmiutil or capmc."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """Command, timeout and sampling interval."""
        group.add_argument(
            "--collector.ipmi_dcmi.cmd",
            dest="ipmi_dcmi_cmd",
            default="",
            metavar="CMD",
            help="Command printing DCMI power statistics, e.g. 'sudo ipmi-dcmi "
            "--get-system-power-statistics'. Default: the first of "
            f"{', '.join(TOOLS)} found on PATH, with its standard arguments.",
        )
        group.add_argument(
            "--collector.ipmi_dcmi.timeout",
            dest="ipmi_dcmi_timeout",
            type=float,
            default=5.0,
            metavar="SECONDS",
            help="Seconds after which a BMC command is killed. Default: %(default)s.",
        )
        group.add_argument(
            "--collector.ipmi_dcmi.interval",
            dest="ipmi_dcmi_interval",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="Seconds between BMC readings; a reading older than three intervals is not "
            "served. Default: %(default)s.",
        )

    def build(self, node: NodeContext, options: argparse.Namespace) -> IpmiCollector:
        """Resolve the command and start sampling it."""
        if options.ipmi_dcmi_timeout <= 0 or options.ipmi_dcmi_interval <= 0:
            raise CollectorError("--collector.ipmi_dcmi.timeout and .interval must be positive")
        argv = resolve_command(options.ipmi_dcmi_cmd)
        command = PowerCommand(tuple(argv), options.ipmi_dcmi_timeout)
        sampler = BackgroundSampler(
            "ipmi_dcmi",
            command,
            options.ipmi_dcmi_interval,
            max_age_s=3 * options.ipmi_dcmi_interval + options.ipmi_dcmi_timeout,
        )
        sampler.start()
        return IpmiCollector(node.hostname, sampler)


FACTORY = IpmiCollectorFactory()
