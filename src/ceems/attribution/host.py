"""Recording rules that split a node's (non-GPU) power between the compute units on it.

Per node (docs/attribution.md has the derivation):

    host  = PUE x node sensor (minus the node's GPUs when the sensor sees them)
    misc  = the part of host that is neither CPU nor DRAM: measured as host - RAPL (or
            Cray cpu+memory) when those exist, else `misc_fraction` x host
    cpu   = (host - misc) x package / (package + dram)      [all of host - misc w/o RAPL]
    dram  = (host - misc) x dram / (package + dram)         [0 w/o RAPL]

    unit  = cpu x cpu_share + dram x memory_share + misc x misc_share
    rest  = cpu x (1 - sum cpu_share) + dram x (1 - sum memory_share)
            + misc x (1 - sum misc_share)

Shares are clamped so they never sum above 1 (a unit's counters can run ahead of the node's
between two scrapes), which is what makes `sum(unit) + rest == host` hold at every instant.
"""

from __future__ import annotations

from typing import Any

from ceems.attribution.spec import (
    HostJob,
    MiscPolicy,
    PowerSource,
    RuleSpec,
)
from ceems.tsdb.promql import format_duration

BY = "job, instance"
ON = "on (job, instance)"

HOST = "instance:ceems_host_power_watts:pue"
MISC = "instance:ceems_host_misc_power_watts:pue"
CPU = "instance:ceems_host_cpu_power_watts:pue"
DRAM = "instance:ceems_host_dram_power_watts:pue"
REST = "instance:ceems_host_unattributed_power_watts:pue"
UNIT = "uuid:ceems_host_power_watts:pue"
UNIT_EMISSIONS = "uuid:ceems_host_emissions_g_s:pue"
DEV_GPU = "dev:ceems_gpu_power_watts:pue"
# What RAPL or Cray pm_counters measure of the CPU and DRAM, x PUE, before scaling to host.
CPU_MEASURED = "instance:ceems_host_cpu_measured_watts:pue"
DRAM_MEASURED = "instance:ceems_host_dram_measured_watts:pue"

# Sensors that measure the whole node, GPUs included.
_SEES_GPUS = {PowerSource.REDFISH, PowerSource.IPMI, PowerSource.HWMON}


def number(value: float) -> str:
    """A float as PromQL reads it back exactly."""
    return repr(float(value))


class HostRules:
    """The rule expressions of one ceems_exporter scrape job."""

    def __init__(self, host: HostJob, spec: RuleSpec) -> None:
        self.host = host
        self.spec = spec
        self.j = f'job="{host.job}"'
        self.r = format_duration(spec.rate_interval)

    def sel(self, name: str, extra: str = "") -> str:
        """`name{job="J",extra}`."""
        return f"{name}{{{self.j}{',' + extra if extra else ''}}}"

    def cray(self, domain: str, *, regex: bool = False) -> str:
        """Cray pm_counters power of one domain (or of domains matching a regex)."""
        op = "=~" if regex else "="
        return self.sel("ceems_cray_pm_counters_power_watts", f'domain{op}"{domain}"')

    def irate(self, name: str, extra: str = "") -> str:
        return f"irate({self.sel(name, extra)}[{self.r}])"

    # --- node level -------------------------------------------------------------------

    def sensor(self) -> str:
        """The node sensor's watts, one series per (job, instance), before PUE."""
        h = self.host
        if h.source is PowerSource.CRAY:
            node = f"sum by ({BY}) ({self.cray('node')})"
            if not h.cray_accel:
                return node
            accel = f"sum by ({BY}) ({self.cray('accel[0-9]+', regex=True)})"
            return f"(clamp_min({node} - {ON} {accel}, 0) or {node})"
        series = {
            PowerSource.REDFISH: "ceems_redfish_current_watts",
            PowerSource.IPMI: "ceems_ipmi_dcmi_current_watts",
            PowerSource.HWMON: "ceems_hwmon_power_current_watts",
        }[h.source]
        if h.gpus and self.spec.gpus and h.source in _SEES_GPUS:
            # The BMC sees the GPUs too; their power is the GPU rules' to attribute.
            raw = f"sum by ({BY}, hostname) ({self.sel(series)})"
            gpus = f"sum by (hostname) ({DEV_GPU}) / {number(self.spec.pue)}"
            return (
                f"sum by ({BY}) (\n  clamp_min({raw} - on (hostname) group_left () ({gpus}), 0)\n"
                f"  or\n  {raw}\n)"
            )
        return f"sum by ({BY}) ({self.sel(series)})"

    def components(self) -> tuple[str, str] | None:
        """Measured CPU and DRAM watts (before PUE), when the node has them."""
        h = self.host
        if h.source is PowerSource.CRAY:
            return (f"sum by ({BY}) ({self.cray('cpu')})", f"sum by ({BY}) ({self.cray('memory')})")
        if h.rapl or h.source is PowerSource.RAPL:
            package = f"sum by ({BY}) ({self.irate('ceems_rapl_package_joules_total')})"
            if not h.rapl_dram:
                return package, ""
            return package, f"sum by ({BY}) ({self.irate('ceems_rapl_dram_joules_total')})"
        return None

    def node_rules(self) -> list[dict[str, Any]]:
        """host, misc, cpu, dram: each later rule reads the ones before it."""
        pue = number(self.spec.pue)
        host, misc = f"{HOST}{{{self.j}}}", f"{MISC}{{{self.j}}}"
        parts = self.components()
        if parts is None:
            f = number(self.spec.misc_fraction)
            return [
                _rule(HOST, f"{pue} * {self.sensor()}"),
                _rule(MISC, f"{f} * {host}"),
                _rule(CPU, f"{number(1 - self.spec.misc_fraction)} * {host}"),
                _rule(DRAM, f"0 * {host}"),
            ]
        cpu_m, dram_m = f"{CPU_MEASURED}{{{self.j}}}", f"{DRAM_MEASURED}{{{self.j}}}"
        dram_expr = f"({parts[1]} or 0 * {cpu_m})" if parts[1] else f"0 * {cpu_m}"
        measured = f"({cpu_m} + {dram_m})"
        rapl_only = self.host.source is PowerSource.RAPL
        host_expr = measured if rapl_only else f"{pue} * {self.sensor()}"
        return [
            _rule(CPU_MEASURED, f"{pue} * {parts[0]}"),
            _rule(DRAM_MEASURED, f"{pue} * {dram_expr}"),
            _rule(HOST, host_expr),
            _rule(MISC, f"clamp_min({host} - {measured}, 0)"),
            _rule(CPU, f"({host} - {misc}) * {cpu_m} / clamp_min({measured}, 1e-09)"),
            _rule(DRAM, f"({host} - {misc}) * {dram_m} / clamp_min({measured}, 1e-09)"),
        ]

    # --- unit shares --------------------------------------------------------------------

    def _zero(self) -> str:
        """0 for every unit on the node: fills a share a unit lacks for an instant."""
        return f"(0 * {self.sel('ceems_compute_unit_memory_used_bytes')})"

    def _share(self, unit: str, node: str, floor: str) -> str:
        """unit / max(node, sum of units), so shares on a node never sum above 1."""
        units = f"sum by ({BY}) ({unit})"
        denominator = f"clamp_min({units} > {ON} {node} or {ON} {node}, {floor})"
        return f"(\n  {unit}\n  / {ON} group_left ()\n  {denominator}\n  or\n  {self._zero()}\n)"

    def cpu_share(self) -> str:
        # Only units still there: irate keeps a counter's last rate for a rate interval after
        # the unit's series went stale, and an ended unit's share would leave the node's CPU
        # power unattributed to anyone (its own power rule needs its memory gauge).
        unit = (
            f"(({self.irate('ceems_compute_unit_cpu_user_seconds_total')}"
            f" + {self.irate('ceems_compute_unit_cpu_system_seconds_total')})"
            f" and {self.sel('ceems_compute_unit_memory_used_bytes')})"
        )
        mode = 'mode!~"idle|iowait|steal"'
        busy = f"sum by ({BY}) ({self.irate('ceems_cpu_seconds_total', mode)})"
        return self._share(unit, busy, "1e-09")

    def memory_share(self) -> str:
        unit = self.sel("ceems_compute_unit_memory_used_bytes")
        used = (
            f"sum by ({BY}) ({self.sel('ceems_meminfo_MemTotal_bytes')}"
            f" - {self.sel('ceems_meminfo_MemAvailable_bytes')})"
        )
        return self._share(unit, used, "1")

    def misc_share(self) -> str | None:
        policy = self.spec.misc_policy
        if policy is MiscPolicy.NODE:
            return None
        if policy is MiscPolicy.EQUAL:
            unit = f"({self.sel('ceems_compute_unit_memory_used_bytes')} >= bool 0)"
            return f"(\n  {unit}\n  / {ON} group_left ()\n  count by ({BY}) ({unit})\n)"
        unit = self.sel("ceems_compute_unit_cpus")
        cpus = f"sum by ({BY}) ({self.sel('ceems_cpu_count')})"
        return self._share(unit, cpus, "1")

    # --- unit rules ---------------------------------------------------------------------

    def provenance(self) -> dict[str, str]:
        """Constant labels on unit power (and so emissions): how the figure was made."""
        h = self.host
        source = str(h.source)
        if h.rapl and h.source is not PowerSource.RAPL:
            source += "+rapl"
        method = ["cpu_time"]
        if self.components() is not None:
            method.append("memory")
        if self.spec.misc_policy is not MiscPolicy.NODE:
            method.append(f"misc_{self.spec.misc_policy}")
        return {
            "power_source": source,
            "attribution": "+".join(method),
            "pue": f"{self.spec.pue:g}",
        }

    def unit_power(self) -> str:
        terms = [
            f"{CPU}{{{self.j}}} * {ON} group_right () {indent(self.cpu_share())}",
            f"{DRAM}{{{self.j}}} * {ON} group_right () {indent(self.memory_share())}",
        ]
        misc = self.misc_share()
        if misc is not None:
            terms.append(f"{MISC}{{{self.j}}} * {ON} group_right () {indent(misc)}")
        return "\n+\n".join(terms)

    def remainder(self) -> str:
        def rest(node: str, share: str) -> str:
            total = f"sum by ({BY}) {indent(share)}"
            return f"{node}{{{self.j}}} * (1 - ({total} or 0 * {node}{{{self.j}}}))"

        terms = [rest(CPU, self.cpu_share()), rest(DRAM, self.memory_share())]
        misc = self.misc_share()
        terms.append(rest(MISC, misc) if misc is not None else f"{MISC}{{{self.j}}}")
        return "\n+\n".join(terms)

    def usage_rules(self) -> list[dict[str, Any]]:
        """CEEMS' per-unit CPU and memory usage (%), for its dashboards and updater."""
        cpu = (
            f"({self.irate('ceems_compute_unit_cpu_user_seconds_total')}"
            f" + {self.irate('ceems_compute_unit_cpu_system_seconds_total')}) * 100\n"
            f"/ ({self.sel('ceems_compute_unit_cpus')} > 0)"
        )
        memory = (
            f"{self.sel('ceems_compute_unit_memory_used_bytes')} * 100\n"
            f"/ ({self.sel('ceems_compute_unit_memory_total_bytes')} > 0)"
        )
        return [
            _rule("uuid:ceems_cpu_usage:ratio_irate", cpu),
            _rule("uuid:ceems_cpu_memory_usage:ratio", memory),
        ]

    def rules(self) -> list[dict[str, Any]]:
        """The whole group, in evaluation order."""
        return [
            *self.usage_rules(),
            *self.node_rules(),
            _rule(UNIT, self.unit_power(), self.provenance()),
            _rule(REST, self.remainder()),
            *emission_rules(UNIT_EMISSIONS, f"{UNIT}{{{self.j}}}", self.spec),
        ]


def indent(text: str, pad: str = "  ") -> str:
    """Indent continuation lines of a multi-line expression."""
    return text.replace("\n", "\n" + pad)


def _rule(record: str, expr: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": record, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


def emission_rules(record: str, power: str, spec: RuleSpec) -> list[dict[str, Any]]:
    """g/s = W / 3.6e6 x gCO2e/kWh, one rule per provider, keyed by a `provider` label."""
    e = spec.emissions
    rules = []
    country = f',country_code="{e.country_code}"' if e.country_code else ""
    for provider in e.providers:
        factor = f'max by (provider) (ceems_emissions_gCo2_kWh{{provider="{provider}"{country}}})'
        expr = (
            f'label_replace({power} / 3.6e+06, "provider", "{provider}", "instance", "(.*)")\n'
            f"* on (provider) group_left ()\n{factor}"
        )
        rules.append(_rule(record, expr))
    if not e.providers and e.static_g_per_kwh > 0:
        expr = (
            f"label_replace({power} * {number(e.static_g_per_kwh)} / 3.6e+06, "
            f'"provider", "{e.static_provider}", "instance", "(.*)")'
        )
        rules.append(_rule(record, expr))
    return rules
