"""Energy, power and cost of one run: pure functions of its records and the hardware spec.

Energy is counted per event (docs/metrics.md, "Energy and cost"):

- **compute**: every compute interval's FLOP x the energy of one FLOP in the run's dtype;
- **sram**: the SRAM bytes of the compute intervals x the SRAM energy per byte. An interval's
  ``bytes`` are its SRAM bytes plus the bytes of its DRAM flows (ComputeStep), and DRAM flows
  arise only from compute steps, so the SRAM bytes of a run are ``sum(interval bytes) -
  sum(DRAM flow bytes)``;
- **noc**, **chip_to_chip**, **nic**, **dram**: every flow's bytes x the energy per byte of each
  channel it crosses (a route of ``h`` NoC hops costs ``bytes x h x noc_hop``; a DRAM flow
  costs one DRAM access plus the NoC hops to its port);
- **static_tiles**, **static_chips**: the static power of every tile and every die (wafer) or
  node (cluster) of the machine, used or not, over the iteration.

With symmetric data-parallel replicas the records are replica 0's; its dynamic energy is
multiplied by the replicas it stands for (:attr:`MappingPlan.replication`). The breakdown
sums to the total by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from palmsim.config.specs import CostSpec, EnergySpec, HardwareSpec
from palmsim.engine.records import RunTrace, Work
from palmsim.hardware.cost import die_yield, gross_dies_per_wafer
from palmsim.mapping.plan import MappingPlan
from palmsim.report.metrics import DRAM_KIND, ChipLike

__all__ = [
    "ENERGY_COMPONENTS",
    "cost_summary",
    "energy_rows",
    "energy_summary",
    "flow_energy_j",
    "format_energy_table",
    "power_floor_w",
    "serving_cost_summary",
    "serving_energy_rows",
    "serving_energy_summary",
    "watts",
]

#: Keys of ``energy_breakdown_j``, in report order.
ENERGY_COMPONENTS: tuple[str, ...] = (
    "compute",
    "sram",
    "noc",
    "chip_to_chip",
    "nic",
    "dram",
    "static_tiles",
    "static_chips",
)

#: Chip channel kind -> energy component.
_CHANNEL_COMPONENT = {
    "intra_die": "noc",
    "inter_die": "chip_to_chip",
    "nvlink": "chip_to_chip",
    "nic": "nic",
    DRAM_KIND: "dram",
}


def flow_energy_j(size_bytes: float, channel_kinds: tuple[str, ...], energy: EnergySpec) -> float:
    """Energy of one flow of ``size_bytes`` over channels of these kinds [J]:
    ``size_bytes x sum of each channel's energy per byte``."""
    return size_bytes * sum(energy.channel_j_per_byte(kind) for kind in channel_kinds)


def power_floor_w(hardware: HardwareSpec) -> float:
    """Static power of the whole machine [W]: every tile and every die/node, busy or not.

    The energy of an iteration is at least this times its time (dynamic energy is >= 0), the
    bound ``palmsim search --objective energy`` prunes with.
    """
    energy = hardware.energy
    assert energy is not None
    return (
        energy.static_per_tile_w * hardware.num_tiles
        + energy.static_per_chip_w * hardware.num_chips
    )


def energy_summary(
    trace: RunTrace, chip: ChipLike, plan: MappingPlan, hardware: HardwareSpec, dtype: str
) -> dict[str, Any]:
    """Energy per iteration, token and sample, its breakdown and the average power.

    Args:
        trace: the run's records.
        chip: the chip the run used (its channels' kinds).
        plan: the executed plan (replication, tokens and samples per iteration).
        hardware: the hardware spec, with its ``energy`` section.
        dtype: the number format the compute ran in (the FLOP energy's key).

    Returns:
        JSON-ready dict; keys defined in docs/metrics.md ("Energy and cost").
    """
    energy = hardware.energy
    assert energy is not None
    time_s = float(trace.end_time_s)
    replication = plan.replication
    work = Work.of_trace(trace, [c.kind for c in chip.channels])
    parts = _dynamic_parts(work, energy, dtype)
    for key in parts:
        parts[key] *= replication
    total_j, power = _with_static(parts, hardware, time_s, hardware.num_tiles, hardware.num_chips)
    return {
        "energy_per_iteration_j": total_j,
        "energy_per_token_j": total_j / plan.tokens_per_iteration,
        "energy_per_sample_j": total_j / plan.samples_per_iteration,
        "energy_breakdown_j": parts,
        **power,
    }


def _dynamic_parts(work: Work, energy: EnergySpec, dtype: str) -> dict[str, float]:
    """The breakdown of ``work``'s dynamic energy (:data:`ENERGY_COMPONENTS`, static parts
    zero): its FLOP at the format's energy, the SRAM bytes (an interval's bytes are its SRAM
    bytes plus its DRAM flows') at the SRAM's, each channel kind's bytes at its own."""
    parts = dict.fromkeys(ENERGY_COMPONENTS, 0.0)
    parts["compute"] = work.flop * energy.flop_for(dtype)
    # Rounding may leave -1 ulp where a run has no SRAM bytes at all.
    parts["sram"] = max(0.0, work.operand_bytes - work.dram_flow_bytes) * energy.sram_j_per_byte
    for kind, nbytes in work.channel_bytes.items():
        parts[_CHANNEL_COMPONENT[kind]] += nbytes * energy.channel_j_per_byte(kind)
    return parts


def _with_static(
    parts: dict[str, float], hardware: HardwareSpec, time_s: float, tiles: float, chips: float
) -> tuple[float, dict[str, Any]]:
    """Add the static energy of ``tiles`` tiles and ``chips`` dies or nodes over ``time_s`` to
    ``parts``; the total and the average power, against the TDP of those tiles and chips
    where the hardware gives one."""
    energy = hardware.energy
    assert energy is not None
    parts["static_tiles"] = energy.static_per_tile_w * tiles * time_s
    parts["static_chips"] = energy.static_per_chip_w * chips * time_s
    total_j = sum(parts.values())
    out: dict[str, Any] = {"average_power_w": total_j / time_s if time_s > 0 else 0.0}
    if energy.tdp_per_tile_w is not None:
        tdp_w = energy.tdp_per_tile_w * tiles + energy.static_per_chip_w * chips
        # Die-edge DRAM is off-package memory, outside the tiles' TDP; HBM and per-tile
        # stacked DRAM draw from the package's budget.
        outside_j = parts["dram"] if hardware.dram.placement == "die_edge" else 0.0
        within_w = (total_j - outside_j) / time_s if time_s > 0 else 0.0
        out["tdp_w"] = tdp_w
        out["average_power_within_tdp_w"] = within_w
        out["average_power_fraction_of_tdp"] = within_w / tdp_w if tdp_w else 0.0
    return total_j, out


def serving_energy_summary(
    work: Work,
    duration_s: float,
    hardware: HardwareSpec,
    used_tiles: int,
    dtype: str,
    output_tokens: int,
    requests: int,
) -> dict[str, Any]:
    """Energy of a serving run, per output token and request, its breakdown and the average
    power: the iterations' and hand-offs' ``work`` (:class:`~palmsim.engine.records.Work`)
    at the hardware's energies per FLOP and byte, as :func:`energy_summary` counts a run's
    records, and the static power of the ``used_tiles`` tiles the replicas occupy, with
    their share of the machine's dies or nodes (``used_tiles / num_tiles`` of them), over
    the run's ``duration_s``, idle iterations included.

    Returns:
        JSON-ready dict; keys defined in docs/metrics.md ("Serving energy and cost").
    """
    energy = hardware.energy
    assert energy is not None
    parts = _dynamic_parts(work, energy, dtype)
    share = used_tiles / hardware.num_tiles
    total_j, power = _with_static(
        parts, hardware, duration_s, used_tiles, hardware.num_chips * share
    )
    return {
        "energy_j": total_j,
        "energy_per_output_token_j": total_j / output_tokens if output_tokens else 0.0,
        "energy_per_request_j": total_j / requests if requests else 0.0,
        "energy_breakdown_j": parts,
        "tiles_counted": used_tiles,
        **power,
    }


def _num_dies(hardware: HardwareSpec) -> int:
    """Dies the machine is built of: a wafer's dies, or one per GPU."""
    if hardware.wafer is not None:
        return hardware.wafer.die_rows * hardware.wafer.die_cols
    return hardware.num_tiles


def _tiles_per_die(hardware: HardwareSpec) -> int:
    if hardware.wafer is not None:
        return hardware.wafer.tile_rows * hardware.wafer.tile_cols
    return 1


def silicon(cost: CostSpec, hardware: HardwareSpec) -> dict[str, Any]:
    """Yield and silicon cost of the machine's dies (pure; see :mod:`palmsim.hardware.cost`).

    ``usable_tiles_per_wafer`` counts a wafer's tiles that work when each dead tile is
    disabled on its own (tile yield) instead of the die it sits on being discarded.
    """
    dies_per_wafer = gross_dies_per_wafer(cost.die_area_m2, cost.wafer_diameter_m)
    y_die = die_yield(
        cost.die_area_m2, cost.defect_density_per_m2, cost.yield_model, cost.clustering
    )
    y_tile = die_yield(
        cost.tile_area_m2, cost.defect_density_per_m2, cost.yield_model, cost.clustering
    )
    good_dies = dies_per_wafer * y_die
    num_dies = _num_dies(hardware)
    cost_per_good_die = cost.wafer_price_usd / good_dies if good_dies > 0 else float("inf")
    return {
        "dies_per_wafer": dies_per_wafer,
        "die_yield": y_die,
        "good_dies_per_wafer": good_dies,
        "tile_yield": y_tile,
        "usable_tiles_per_wafer": dies_per_wafer * _tiles_per_die(hardware) * y_tile,
        "num_dies": num_dies,
        "cost_per_good_die_usd": cost_per_good_die,
        "silicon_cost_usd": num_dies * cost_per_good_die,
    }


def capital_usd(hardware: HardwareSpec) -> float:
    """What the machine costs: its system price, else its good dies at the wafer price."""
    cost = hardware.cost
    assert cost is not None
    if cost.system_price_usd is not None:
        return cost.system_price_usd
    return float(silicon(cost, hardware)["silicon_cost_usd"])


def cost_summary(
    energy: Mapping[str, Any] | None,
    hardware: HardwareSpec,
    plan: MappingPlan,
    iteration_time_s: float,
) -> dict[str, Any]:
    """Dollars per iteration, token, sample and training run: the machine's price written off
    over its lifetime for the iteration's time, plus the iteration's energy at the energy
    price (none without an ``energy:`` section).
    """
    cost = hardware.cost
    assert cost is not None
    capital = capital_usd(hardware)
    energy_j = float(energy["energy_per_iteration_j"]) if energy is not None else 0.0
    per_iteration, breakdown = _written_off(capital, energy_j, iteration_time_s, cost)
    per_token = per_iteration / plan.tokens_per_iteration
    out: dict[str, Any] = {
        **silicon(cost, hardware),
        "capital_usd": capital,
        "cost_per_iteration_usd": per_iteration,
        "cost_breakdown_usd": breakdown,
        "cost_per_token_usd": per_token,
        "cost_per_sample_usd": per_iteration / plan.samples_per_iteration,
    }
    if cost.training_tokens is not None:
        out["cost_per_training_run_usd"] = per_token * cost.training_tokens
    return out


def _written_off(
    capital_usd: float, energy_j: float, time_s: float, cost: CostSpec
) -> tuple[float, dict[str, float]]:
    """Dollars of ``time_s`` on a machine of ``capital_usd`` written off over its lifetime,
    plus ``energy_j`` at the energy price: the total and its breakdown."""
    capital_part = capital_usd * time_s / cost.lifetime_s
    energy_part = energy_j * cost.energy_price_usd_per_j
    return capital_part + energy_part, {"capital": capital_part, "energy": energy_part}


def serving_cost_summary(
    energy: Mapping[str, Any] | None,
    hardware: HardwareSpec,
    used_tiles: int,
    duration_s: float,
    output_tokens: int,
    requests: int,
) -> dict[str, Any]:
    """Dollars of a serving run, per output token and request: the share of the machine's
    price its ``used_tiles`` tiles hold (``used_tiles / num_tiles``), written off over the
    lifetime for the run's ``duration_s``, plus the run's energy at the energy price (none
    without an ``energy:`` section).

    Returns:
        JSON-ready dict; keys defined in docs/metrics.md ("Serving energy and cost").
    """
    cost = hardware.cost
    assert cost is not None
    capital = capital_usd(hardware) * used_tiles / hardware.num_tiles
    energy_j = float(energy["energy_j"]) if energy is not None else 0.0
    total, breakdown = _written_off(capital, energy_j, duration_s, cost)
    return {
        "capital_usd": capital,
        "cost_usd": total,
        "cost_breakdown_usd": breakdown,
        "cost_per_output_token_usd": total / output_tokens if output_tokens else 0.0,
        "cost_per_million_output_tokens_usd": 1e6 * total / output_tokens if output_tokens else 0.0,
        "cost_per_request_usd": total / requests if requests else 0.0,
    }


def _joules(value_j: float) -> str:
    for name, scale in (("GJ", 1e9), ("MJ", 1e6), ("kJ", 1e3), ("J", 1.0), ("mJ", 1e-3)):
        if abs(value_j) >= scale:
            return f"{value_j / scale:.4g} {name}"
    return f"{value_j * 1e6:.4g} µJ"


def watts(value_w: float) -> str:
    """A power in W, kW or MW, four significant digits (the tables' and figures')."""
    for name, scale in (("MW", 1e6), ("kW", 1e3)):
        if abs(value_w) >= scale:
            return f"{value_w / scale:.4g} {name}"
    return f"{value_w:.4g} W"


def _dollars(value_usd: float) -> str:
    return f"${value_usd:,.2f}" if abs(value_usd) >= 0.01 else f"${value_usd:.3g}"


def energy_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of a summary's ``energy``, ``cost`` and ``defects`` sections, in
    human units; one row saying so when the hardware has no ``energy:`` section."""
    rows: list[tuple[str, str]] = []
    energy = summary.get("energy")
    if not energy:
        rows.append(("energy", "not modelled (the hardware file has no energy: section)"))
    else:
        rows.append(("energy per iteration", _joules(energy["energy_per_iteration_j"])))
        rows.append(("energy per token", _joules(energy["energy_per_token_j"])))
        if "energy_per_sample_j" in energy:
            rows.append(("energy per sample", _joules(energy["energy_per_sample_j"])))
        rows.append(("average power", watts(energy["average_power_w"])))
        if "tdp_w" in energy:
            within = energy.get("average_power_within_tdp_w", energy["average_power_w"])
            fraction = energy["average_power_fraction_of_tdp"]
            outside = " (die-edge DRAM excluded)" if within < energy["average_power_w"] else ""
            rows.append(
                (
                    "  against TDP",
                    f"{watts(within)}{outside} = {100 * fraction:.1f} % of TDP "
                    f"{watts(energy['tdp_w'])}",
                )
            )
        rows.append(_breakdown_row(energy["energy_per_iteration_j"], energy))
    cost = summary.get("cost")
    if cost:
        rows.append(("cost per token", _dollars(cost["cost_per_token_usd"])))
        if "cost_per_training_run_usd" in cost:
            rows.append(("cost per training run", _dollars(cost["cost_per_training_run_usd"])))
        b = cost["cost_breakdown_usd"]
        rows.append(
            (
                "  per iteration",
                f"{_dollars(cost['cost_per_iteration_usd'])}: capital {_dollars(b['capital'])} "
                f"+ energy {_dollars(b['energy'])}",
            )
        )
        rows.append(
            (
                "yield",
                f"die {100 * cost['die_yield']:.1f} %, {cost['good_dies_per_wafer']:.1f} good "
                f"of {cost['dies_per_wafer']} dies per wafer; tile "
                f"{100 * cost['tile_yield']:.1f} %",
            )
        )
    defects = summary.get("defects")
    if defects:
        rows.append(
            (
                "live tiles",
                f"{defects['num_tiles_live']} of "
                f"{defects['num_tiles_live'] + defects['num_tiles_dead']} "
                f"({defects['num_dead_links']} dead links, {defects['num_degraded_links']} "
                f"degraded, {defects['num_dead_dram_ports']} dead DRAM ports)",
            )
        )
        rows.append(("rerouted flows", f"{defects['rerouted_flows']} of {defects['num_flows']}"))
        if "slowdown" in defects:
            rows.append(
                (
                    "slowdown (defects)",
                    f"{defects['slowdown']:.4f}x against "
                    f"{defects['defect_free_iteration_time_s']:.4g} s on the defect-free chip",
                )
            )
    return rows


def _breakdown_row(total_j: float, energy: Mapping[str, Any]) -> tuple[str, str]:
    """The ``breakdown`` row: each nonzero part of ``energy_breakdown_j`` as a percentage of
    ``total_j``."""
    total = float(total_j)
    parts = energy["energy_breakdown_j"]
    return (
        "  breakdown",
        ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in parts.items() if total > 0 and v > 0),
    )


def serving_energy_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of a serving summary's ``energy`` and ``cost`` sections, in human
    units; none for hardware without them."""
    rows: list[tuple[str, str]] = []
    energy = summary.get("energy")
    if energy:
        tiles = energy["tiles_counted"]
        rows.append(
            (
                "energy",
                f"{_joules(energy['energy_per_output_token_j'])} per output token, "
                f"{_joules(energy['energy_per_request_j'])} per request",
            )
        )
        power = watts(energy["average_power_w"])
        if "tdp_w" in energy:
            within = energy["average_power_within_tdp_w"]
            if within < energy["average_power_w"]:
                power += f", {watts(within)} without the die-edge DRAM"
            power += (
                f" = {100 * energy['average_power_fraction_of_tdp']:.1f} % of the TDP "
                f"{watts(energy['tdp_w'])}"
            )
        counted = f"{tiles} tile{'s' * (tiles != 1)} and {'its' if tiles == 1 else 'their'}"
        rows.append(("average power", f"{power} ({counted} share of the dies or nodes)"))
        rows.append(_breakdown_row(energy["energy_j"], energy))
    cost = summary.get("cost")
    if cost:
        b = cost["cost_breakdown_usd"]
        rows.append(
            (
                "cost",
                f"{_dollars(cost['cost_per_million_output_tokens_usd'])} per million output "
                f"tokens (capital {_dollars(b['capital'])} + energy {_dollars(b['energy'])} "
                "for the run)",
            )
        )
    return rows


def format_energy_table(summary: Mapping[str, Any], width: int = 23) -> str:
    """:func:`energy_rows` as an aligned two-column text table (labels ``width`` wide)."""
    rows = energy_rows(summary)
    width = max(width, *(len(label) for label, _ in rows))
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
