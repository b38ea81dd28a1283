"""Power and energy sensors from /sys/class/hwmon, as ceems_hwmon_* gauges in watts and joules."""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily

from ceems.exporter.collector import NoDataError, NodeContext

log = logging.getLogger(__name__)

LABELS = ["hostname", "sensor", "chip", "chip_name"]
# (sensor type, property) -> (family name, HELP), the five CEEMS exports; other hwmon
# files (temp*, freq*, power1_cap, power1_average_interval, ...) are not ours.
FAMILIES = {
    ("power", "input"): ("ceems_hwmon_power_current_watts", "Current Power consumption in watts"),
    ("power", "average"): ("ceems_hwmon_power_avg_watts", "Average Power consumption in watts"),
    ("power", "input_lowest"): (
        "ceems_hwmon_power_min_watts",
        "Minimum Power consumption in watts",
    ),
    ("power", "input_highest"): (
        "ceems_hwmon_power_max_watts",
        "Maximum Power consumption in watts",
    ),
    ("energy", "input"): (
        "ceems_hwmon_energy_current_joules",
        "Current Energy consumption in joules",
    ),
}
_SENSOR_FILE = re.compile(r"^(?P<type>[a-z]+)(?P<num>[0-9]+)_(?P<property>[a-z_]+)$")
_INVALID_CHARS = re.compile(r"[^a-z0-9:_]")


@dataclass(frozen=True, slots=True)
class HwmonSensor:
    """One sensor file: `power1_average` is sensor `power1`, kind (`power`, `average`)."""

    sensor: str
    kind: tuple[str, str]
    path: Path


@dataclass(frozen=True, slots=True)
class HwmonChip:
    """A hwmon device with at least one power or energy sensor."""

    chip: str
    chip_name: str
    sensors: tuple[HwmonSensor, ...]


def parse_sensor_filename(filename: str) -> tuple[str, tuple[str, str]] | None:
    """`power1_input` -> (`power1`, (`power`, `input`)); None for files CEEMS does not export."""
    match = _SENSOR_FILE.match(filename)
    if match is None:
        return None
    kind = (match["type"], match["property"])
    if kind not in FAMILIES:
        return None
    return f"{match['type']}{int(match['num'])}", kind


def parse_micro(text: str, source: Path) -> float:
    """A hwmon power (µW) or energy (µJ) reading converted to watts or joules."""
    try:
        return int(text.strip()) / 1e6
    except ValueError as err:
        raise ValueError(f"{source}: not an integer micro-unit value: {text.strip()!r}") from err


def clean_name(raw: str) -> str:
    """Lower-case, invalid characters to `_`, outer `_` trimmed, as node_exporter's hwmon does."""
    return _INVALID_CHARS.sub("_", raw.lower()).strip("_")


def chip_id(hwmon_dir: Path) -> str:
    """A stable chip id, derived as node_exporter's (and CEEMS') `hwmonName`.

    hwmonN numbering follows driver load order, so prefer `<bus>_<device>` from the
    `device` link (`platform_coretemp_0`), then the `name` file, then hwmonN itself.
    """
    device = hwmon_dir / "device"
    if device.exists():
        real = device.resolve()
        dev_name, dev_type = clean_name(real.name), clean_name(real.parent.name)
        if dev_type and dev_name:
            return f"{dev_type}_{dev_name}"
        if dev_name:
            return dev_name
    name_file = hwmon_dir / "name"
    if name_file.exists() and (name := clean_name(name_file.read_text())):
        return name
    return clean_name(hwmon_dir.resolve().name)


def find_sensors(directory: Path) -> list[HwmonSensor]:
    """The exported sensor files directly in `directory`, sorted by file name."""
    sensors = []
    for entry in sorted(directory.iterdir()):
        parsed = parse_sensor_filename(entry.name)
        if parsed is not None:
            sensors.append(HwmonSensor(parsed[0], parsed[1], entry))
    return sensors


def discover_chips(sysfs: Path) -> list[HwmonChip]:
    """Chips under `<sysfs>/class/hwmon` that have power or energy sensors."""
    root = sysfs / "class" / "hwmon"
    if not root.is_dir():
        raise NoDataError(f"no hwmon directory at {root}")
    chips = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():  # follows the class symlink; a dangling one is skipped
            continue
        sensors = {s.path.name: s for s in find_sensors(entry)}
        # Older drivers put their sensor files on the device itself (node_exporter reads
        # both); the hwmon directory wins when a file exists in both places.
        if (entry / "device").is_dir():
            for sensor in find_sensors(entry / "device"):
                sensors.setdefault(sensor.path.name, sensor)
        if not sensors:
            continue
        name_file = entry / "name"
        chip_name = clean_name(name_file.read_text()) if name_file.exists() else ""
        chips.append(HwmonChip(chip_id(entry), chip_name, tuple(sensors.values())))
    if not chips:
        raise NoDataError(f"no hwmon power or energy sensors under {root}")
    return chips


@dataclass(frozen=True, slots=True)
class HwmonCollector:
    """Emits ceems_hwmon_{power_current,power_avg,power_min,power_max}_watts and energy."""

    sysfs: Path
    hostname: str

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Discover chips and read every sensor; one unreadable file does not fail the rest."""
        families = {
            kind: GaugeMetricFamily(name, help_text, labels=LABELS)
            for kind, (name, help_text) in FAMILIES.items()
        }
        read_errors: list[OSError] = []
        readings = 0
        for chip in discover_chips(self.sysfs):
            for sensor in chip.sensors:
                try:
                    text = sensor.path.read_text()
                except OSError as err:
                    # Some drivers fail reads of sensors the hardware lacks (EIO, ENODATA).
                    log.debug(
                        "hwmon sensor unreadable", extra={"file": str(sensor.path), "err": str(err)}
                    )
                    read_errors.append(err)
                    continue
                value = parse_micro(text, sensor.path)
                labels = [self.hostname, sensor.sensor, chip.chip, chip.chip_name]
                families[sensor.kind].add_metric(labels, value)
                readings += 1
        if not readings and read_errors:
            raise read_errors[0]
        yield from (family for family in families.values() if family.samples)


@dataclass(frozen=True, slots=True)
class HwmonCollectorFactory:
    """Builds the hwmon collector (no options)."""

    name: str = "hwmon"
    enabled_by_default: bool = False
    description: str = "Power and energy sensors from /sys/class/hwmon."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """The hwmon collector has no options."""

    def build(self, node: NodeContext, options: argparse.Namespace) -> HwmonCollector:
        """A collector reading `<sysfs>/class/hwmon/hwmon*`."""
        return HwmonCollector(node.sysfs, node.hostname)


FACTORY = HwmonCollectorFactory()
