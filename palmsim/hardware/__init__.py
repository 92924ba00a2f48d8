"""palmsim.hardware: the static machine (chip graph, routes) and pure cost models."""

from palmsim.hardware.chip import Channel, Chip, DramPort, Route
from palmsim.hardware.compute import op_time_s
from palmsim.hardware.memory import split_sram_dram
from palmsim.hardware.topology import TOPOLOGIES

__all__ = [
    "TOPOLOGIES",
    "Channel",
    "Chip",
    "DramPort",
    "Route",
    "op_time_s",
    "split_sram_dram",
]
