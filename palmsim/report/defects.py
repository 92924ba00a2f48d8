"""What a run's defects did: live tiles, rerouted flows (pure function of records and chip).

The slowdown against the defect-free chip needs a second simulation; :func:`palmsim.api.
run_experiment` runs it and adds ``defect_free_iteration_time_s`` and ``slowdown``.
"""

from __future__ import annotations

from typing import Any

from palmsim.engine.records import RunTrace
from palmsim.hardware.chip import Chip

__all__ = ["defect_summary"]


def defect_summary(trace: RunTrace, chip: Chip) -> dict[str, Any]:
    """Live and dead parts of the chip and the flows that took a detour.

    A flow is rerouted when its channels differ from the route the routing policy takes on
    the defect-free chip between the same tiles (for a DRAM flow: between its tile and the
    tile its port attaches to, plus the port's channel).
    """
    port_of_channel = {p.channel: p for p in chip.dram_ports}
    rerouted = 0
    for flow in trace.flows:
        if flow.src >= 0 and flow.dst >= 0:
            default = chip.default_route(flow.src, flow.dst)
        elif flow.dst >= 0:  # a DRAM read: port channel, then the port's tile to the reader
            port = port_of_channel[flow.channels[0]]
            default = (port.channel, *chip.default_route(port.tile, flow.dst))
        else:  # a DRAM write: the writer to the port's tile, then the port channel
            port = port_of_channel[flow.channels[-1]]
            default = (*chip.default_route(flow.src, port.tile), port.channel)
        rerouted += flow.channels != default
    d = chip.defects
    return {
        "num_tiles_live": chip.num_tiles - len(d.dead_tiles),
        "num_tiles_dead": len(d.dead_tiles),
        "dead_tiles": sorted(d.dead_tiles),
        "num_dead_links": len(d.dead_links),
        "num_degraded_links": len(d.degraded_links),
        "num_dead_dram_ports": len(d.dead_dram_ports),
        "rerouted_flows": rerouted,
        "num_flows": len(trace.flows),
    }
