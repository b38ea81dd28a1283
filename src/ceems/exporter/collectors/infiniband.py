"""InfiniBand HCA ports from /sys/class/infiniband, as ceems_infiniband_* metrics."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ceems.exporter.collector import NoDataError, NodeContext

INFO_LABELS = ["hostname", "device", "board_id", "firmware_version", "hca_type"]
PORT_LABELS = ["hostname", "device", "port"]
# The data counters count 32-bit words, not octets (IBA spec, PortXmitData/PortRcvData:
# "divided by 4"); procfs and CEEMS multiply by 4, as do we.
WORD_COUNTERS = frozenset(
    {"port_rcv_data", "port_xmit_data", "port_rcv_data_64", "port_xmit_data_64"}
)
# (directory under the port, file) -> (CEEMS family name without _total, HELP), CEEMS' texts
# verbatim. counters_ext/ holds the legacy 64-bit counters of older mlx4 drivers.
COUNTERS = {
    ("counters", "excessive_buffer_overrun_errors"): (
        "excessive_buffer_overrun_errors",
        "Number of times that OverrunErrors consecutive flow control update periods occurred, "
        "each having at least one overrun error.",
    ),
    ("counters", "link_downed"): (
        "link_downed",
        "Number of times the link failed to recover from an error state and went down",
    ),
    ("counters", "link_error_recovery"): (
        "link_error_recovery",
        "Number of times the link successfully recovered from an error state",
    ),
    ("counters", "local_link_integrity_errors"): (
        "local_link_integrity_errors",
        "Number of times that the count of local physical errors exceeded the threshold "
        "specified by LocalPhyErrors.",
    ),
    ("counters", "multicast_rcv_packets"): (
        "multicast_packets_received",
        "Number of multicast packets received (including errors)",
    ),
    ("counters", "multicast_xmit_packets"): (
        "multicast_packets_transmitted",
        "Number of multicast packets transmitted (including errors)",
    ),
    ("counters", "port_rcv_constraint_errors"): (
        "port_constraint_errors_received",
        "Number of packets received on the switch physical port that are discarded",
    ),
    ("counters", "port_xmit_constraint_errors"): (
        "port_constraint_errors_transmitted",
        "Number of packets not transmitted from the switch physical port",
    ),
    ("counters", "port_rcv_data"): (
        "port_data_received_bytes",
        "Number of data octets received on all links",
    ),
    ("counters", "port_xmit_data"): (
        "port_data_transmitted_bytes",
        "Number of data octets transmitted on all links",
    ),
    ("counters", "port_rcv_discards"): (
        "port_discards_received",
        "Number of inbound packets discarded by the port because the port is down or congested",
    ),
    ("counters", "port_xmit_discards"): (
        "port_discards_transmitted",
        "Number of outbound packets discarded by the port because the port is down or congested",
    ),
    ("counters", "port_rcv_errors"): (
        "port_errors_received",
        "Number of packets containing an error that were received on this port",
    ),
    ("counters", "port_rcv_packets"): (
        "port_packets_received",
        "Number of packets received on all VLs by this port (including errors)",
    ),
    ("counters", "port_xmit_packets"): (
        "port_packets_transmitted",
        "Number of packets transmitted on all VLs from this port (including errors)",
    ),
    ("counters", "port_xmit_wait"): (
        "port_transmit_wait",
        "Number of ticks during which the port had data to transmit but no data was sent "
        "during the entire tick",
    ),
    ("counters", "unicast_rcv_packets"): (
        "unicast_packets_received",
        "Number of unicast packets received (including errors)",
    ),
    ("counters", "unicast_xmit_packets"): (
        "unicast_packets_transmitted",
        "Number of unicast packets transmitted (including errors)",
    ),
    ("counters", "port_rcv_remote_physical_errors"): (
        "port_receive_remote_physical_errors",
        "Number of packets marked with the EBP (End of Bad Packet) delimiter received on the port.",
    ),
    ("counters", "port_rcv_switch_relay_errors"): (
        "port_receive_switch_relay_errors",
        "Number of packets that could not be forwarded by the switch.",
    ),
    ("counters", "symbol_error"): (
        "symbol_error",
        "Number of minor link errors detected on one or more physical lanes.",
    ),
    ("counters", "VL15_dropped"): (
        "vl15_dropped",
        "Number of incoming VL15 packets dropped due to resource limitations.",
    ),
    ("counters_ext", "port_multicast_rcv_packets"): (
        "legacy_multicast_packets_received",
        "Number of multicast packets received",
    ),
    ("counters_ext", "port_multicast_xmit_packets"): (
        "legacy_multicast_packets_transmitted",
        "Number of multicast packets transmitted",
    ),
    ("counters_ext", "port_rcv_data_64"): (
        "legacy_data_received_bytes",
        "Number of data octets received on all links",
    ),
    ("counters_ext", "port_rcv_packets_64"): (
        "legacy_packets_received",
        "Number of data packets received on all links",
    ),
    ("counters_ext", "port_unicast_rcv_packets"): (
        "legacy_unicast_packets_received",
        "Number of unicast packets received",
    ),
    ("counters_ext", "port_unicast_xmit_packets"): (
        "legacy_unicast_packets_transmitted",
        "Number of unicast packets transmitted",
    ),
    ("counters_ext", "port_xmit_data_64"): (
        "legacy_data_transmitted_bytes",
        "Number of data octets transmitted on all links",
    ),
    ("counters_ext", "port_xmit_packets_64"): (
        "legacy_packets_transmitted",
        # CEEMS' text, slip included ("received" for a transmit counter).
        "Number of data packets received on all links",
    ),
}
STATE_HELP = (
    "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, "
    "5: act defer)"
)
PHYS_STATE_HELP = (
    "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, "
    "4: shift, 5: link up, 6: link error recover, 7: phytest)"
)
NO_PMA = "N/A (no PMA)"  # counters of ports whose HCA has no performance management agent
BYTES_PER_GBIT = 125_000_000


def parse_state(text: str, source: Path) -> int:
    """The numeric id of a `state`/`phys_state` file: `4: ACTIVE` -> 4."""
    number, sep, _ = text.strip().partition(":")
    try:
        if not sep:
            raise ValueError("no ':'")
        return int(number)
    except ValueError as err:
        raise ValueError(f"{source}: expected '<id>: <NAME>', got {text.strip()!r}") from err


def parse_rate(text: str, source: Path) -> float:
    """Bytes per second of a `rate` file: `100 Gb/sec (4X EDR)` -> 1.25e10."""
    fields = text.split()
    try:
        if fields[1:2] != ["Gb/sec"]:
            raise ValueError("no 'Gb/sec' unit")
        return float(fields[0]) * BYTES_PER_GBIT
    except ValueError as err:
        raise ValueError(f"{source}: expected '<n> Gb/sec ...', got {text.strip()!r}") from err


def parse_counter(text: str, source: Path) -> int | None:
    """A counter file's value, or None for a port without a performance agent."""
    value = text.strip()
    if value == NO_PMA:
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"{source}: non-integer counter value {value!r}") from err


def read_optional(path: Path) -> str:
    """A device attribute file, stripped; "" where the driver has none (hfi1 lacks hca_type)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


@dataclass(frozen=True, slots=True)
class PortStats:
    """One port's state ids, rate in bytes/s and counters keyed as COUNTERS is."""

    state_id: int
    physical_state_id: int
    rate_bytes_per_second: float
    counters: dict[tuple[str, str], int]


def list_ports(device: Path) -> list[Path]:
    """The port directories of a device, in numeric order."""
    ports = device / "ports"
    if not ports.is_dir():
        return []
    entries = list(ports.iterdir())
    for entry in entries:
        if not entry.name.isdigit():
            raise ValueError(f"{entry}: port directory name is not a number")
    return sorted(entries, key=lambda entry: int(entry.name))


def read_port(port: Path) -> PortStats:
    """Read a port's state, phys_state, rate and every counter file its driver provides."""
    counters = {}
    for key in COUNTERS:
        path = port.joinpath(*key)
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue  # each driver exposes its own subset
        value = parse_counter(text, path)
        if value is not None:
            counters[key] = value * 4 if key[1] in WORD_COUNTERS else value
    return PortStats(
        state_id=parse_state((port / "state").read_text(), port / "state"),
        physical_state_id=parse_state((port / "phys_state").read_text(), port / "phys_state"),
        rate_bytes_per_second=parse_rate((port / "rate").read_text(), port / "rate"),
        counters=counters,
    )


@dataclass(frozen=True, slots=True)
class InfinibandCollector:
    """Emits ceems_infiniband_info, port state, rate and the port counters per device/port."""

    sysfs: Path
    hostname: str

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Walk every device and port once per scrape; unreadable or garbled files fail it."""
        root = self.sysfs / "class" / "infiniband"
        devices = [d for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else []
        if not devices:
            raise NoDataError(f"no InfiniBand devices under {root}")
        info = GaugeMetricFamily(
            "ceems_infiniband_info",
            "Non-numeric data from /sys/class/infiniband/<device>, value is always 1.",
            labels=INFO_LABELS,
        )
        state = GaugeMetricFamily("ceems_infiniband_state_id", STATE_HELP, labels=PORT_LABELS)
        phys_state = GaugeMetricFamily(
            "ceems_infiniband_physical_state_id", PHYS_STATE_HELP, labels=PORT_LABELS
        )
        rate = GaugeMetricFamily(
            "ceems_infiniband_rate_bytes_per_second",
            "Maximum signal transfer rate",
            labels=PORT_LABELS,
        )
        counters = {
            key: CounterMetricFamily(
                f"ceems_infiniband_{name}_total", help_text, labels=PORT_LABELS
            )
            for key, (name, help_text) in COUNTERS.items()
        }
        for device in devices:
            attrs = [read_optional(device / f) for f in ("board_id", "fw_ver", "hca_type")]
            info.add_metric([self.hostname, device.name, *attrs], 1.0)
            for port in list_ports(device):
                stats = read_port(port)
                labels = [self.hostname, device.name, port.name]
                state.add_metric(labels, stats.state_id)
                phys_state.add_metric(labels, stats.physical_state_id)
                rate.add_metric(labels, stats.rate_bytes_per_second)
                for key, value in stats.counters.items():
                    counters[key].add_metric(labels, value)
        yield info
        yield from (family for family in (state, phys_state, rate) if family.samples)
        yield from (family for family in counters.values() if family.samples)


@dataclass(frozen=True, slots=True)
class InfinibandCollectorFactory:
    """Builds the infiniband collector (no options)."""

    name: str = "infiniband"
    enabled_by_default: bool = False
    description: str = "InfiniBand port state, rate and counters from /sys/class/infiniband."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """The infiniband collector has no options."""

    def build(self, node: NodeContext, options: argparse.Namespace) -> InfinibandCollector:
        """A collector reading `<sysfs>/class/infiniband/<device>/ports/<port>/`."""
        return InfinibandCollector(node.sysfs, node.hostname)


FACTORY = InfinibandCollectorFactory()
