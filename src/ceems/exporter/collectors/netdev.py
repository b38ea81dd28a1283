"""Per-device network traffic from /proc/net/dev, as ceems_netdev_* counters."""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily

from ceems.exporter.collector import CollectorError, NodeContext

log = logging.getLogger(__name__)

LABELS = ["hostname", "device"]
# The 16 columns of /proc/net/dev, in order (Documentation/networking/statistics.rst).
RECEIVE_FIELDS = (
    "bytes",
    "packets",
    "errors",
    "dropped",
    "fifo",
    "frame",
    "compressed",
    "multicast",
)
TRANSMIT_FIELDS = (
    "bytes",
    "packets",
    "errors",
    "dropped",
    "fifo",
    "colls",
    "carrier",
    "compressed",
)
COLUMNS = tuple(f"receive_{f}" for f in RECEIVE_FIELDS) + tuple(
    f"transmit_{f}" for f in TRANSMIT_FIELDS
)
# CEEMS' HELP texts verbatim, including its slips (transmit_errors says "bytes"), so the
# exposition matches CEEMS' own.
HELP = {
    "receive_bytes": "Total received bytes by the network device",
    "receive_packets": "Total received packets by the network device",
    "receive_errors": "Total received errors by the network device",
    "receive_dropped": "Total received dropped packets by the network device",
    "receive_fifo": "Total received FIFO errors by the network device",
    "receive_frame": "Total received frames by the network device",
    "receive_compressed": "Total received compressed packets by the network device",
    "receive_multicast": "Total received multicast packets by the network device",
    "transmit_bytes": "Total transmitted bytes by the network device",
    "transmit_packets": "Total transmitted packets by the network device",
    "transmit_errors": "Total transmitted bytes by the network device",
    "transmit_dropped": "Total transmitted dropped packets by the network device",
    "transmit_fifo": "Total frame transmission errors FIFO by the network device",
    "transmit_colls": "Total transmitted collisions by the network device",
    "transmit_carrier": "Total frame transmission errors errors due to loss of carrier by the "
    "network device",
    "transmit_compressed": "Total transmitted compressed packets by the network device",
}


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """Map each device in /proc/net/dev to its 16 counters, keyed `receive_bytes`, ..."""
    lines = text.splitlines()
    if len(lines) < 2 or "|" not in lines[0] or "|" not in lines[1]:
        raise ValueError("net/dev: missing the two header lines")
    devices: dict[str, dict[str, int]] = {}
    for line in lines[2:]:
        if not line.strip():
            continue
        # The last colon ends the name: long names touch their first value (`veth1a2b:123`).
        name, sep, rest = line.rpartition(":")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"net/dev: no device name in line {line!r}")
        values = rest.split()
        if len(values) != len(COLUMNS):
            raise ValueError(
                f"net/dev: {name}: expected {len(COLUMNS)} values, got {len(values)}: {line!r}"
            )
        try:
            devices[name] = {column: int(v) for column, v in zip(COLUMNS, values, strict=True)}
        except ValueError as err:
            raise ValueError(f"net/dev: {name}: non-integer value in line {line!r}") from err
    return devices


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """Selects devices by full-match regex: an include list, or an exclude list, or all."""

    include: re.Pattern[str] | None = None
    exclude: re.Pattern[str] | None = None

    def accepts(self, device: str) -> bool:
        """Whether `device` is exported."""
        if self.include is not None:
            return self.include.fullmatch(device) is not None
        if self.exclude is not None:
            return self.exclude.fullmatch(device) is None
        return True


@dataclass(frozen=True, slots=True)
class NetdevCollector:
    """Emits ceems_netdev_{receive,transmit}_<field>_total{hostname,device}."""

    procfs: Path
    hostname: str
    devices: DeviceFilter = DeviceFilter()

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Read /proc/net/dev once per scrape and yield one counter family per column."""
        stats = parse_net_dev((self.procfs / "net" / "dev").read_text())
        families = {
            column: CounterMetricFamily(f"ceems_netdev_{column}_total", HELP[column], labels=LABELS)
            for column in COLUMNS
        }
        for device, counters in stats.items():
            if not self.devices.accepts(device):
                log.debug("netdev device filtered out", extra={"device": device})
                continue
            for column, value in counters.items():
                families[column].add_metric([self.hostname, device], value)
        yield from (family for family in families.values() if family.samples)


def compile_pattern(flag: str, pattern: str | None) -> re.Pattern[str] | None:
    """The compiled regex of `flag`, or None when unset or empty (as CEEMS treats "")."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise CollectorError(f"{flag}: invalid regex {pattern!r}: {err}") from err


@dataclass(frozen=True, slots=True)
class NetdevCollectorFactory:
    """Builds the netdev collector."""

    name: str = "netdev"
    enabled_by_default: bool = False
    description: str = "Network device traffic and error counters from /proc/net/dev."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """Device include/exclude regexes, mutually exclusive."""
        group.add_argument(
            "--collector.netdev.device-include",
            dest="netdev_device_include",
            default=None,
            metavar="REGEX",
            help="Export only devices whose whole name matches this regex (mutually exclusive "
            "with --collector.netdev.device-exclude). Default: unset, every device in "
            "/proc/net/dev is exported, lo included.",
        )
        group.add_argument(
            "--collector.netdev.device-exclude",
            dest="netdev_device_exclude",
            default=None,
            metavar="REGEX",
            help="Do not export devices whose whole name matches this regex (mutually "
            "exclusive with --collector.netdev.device-include). Default: unset.",
        )

    def build(self, node: NodeContext, options: argparse.Namespace) -> NetdevCollector:
        """A collector reading `<procfs>/net/dev`; a bad or doubled filter is refused."""
        include, exclude = options.netdev_device_include, options.netdev_device_exclude
        if include and exclude:
            raise CollectorError(
                "--collector.netdev.device-include and --collector.netdev.device-exclude are "
                f"mutually exclusive (got {include!r} and {exclude!r})"
            )
        devices = DeviceFilter(
            compile_pattern("--collector.netdev.device-include", include),
            compile_pattern("--collector.netdev.device-exclude", exclude),
        )
        return NetdevCollector(node.procfs, node.hostname, devices)


FACTORY = NetdevCollectorFactory()
