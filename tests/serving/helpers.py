"""Small serving set-ups built directly from specs (no files)."""

from __future__ import annotations

import numpy as np

from palmsim.config.specs import SchedulerSpec, ServingSpec, SloSpec, TrafficSpec
from palmsim.engine.serving import ServingSimulator, ServingTrace
from palmsim.hardware.chip import Chip
from palmsim.mapping.serving import ServingPlan, map_serving
from palmsim.serving.traffic import Request, generate_requests
from tests.conftest import gpt_model, wafer_spec

PEAK_FLOP_PER_S = 16e12  # fp16 peak of the conftest wafer tile


def compute_bound_tile():
    """One tile, everything in SRAM at unbounded SRAM bandwidth: each op takes FLOP / peak."""
    return wafer_spec(
        dies=(1, 1), tiles=(1, 1), dram_placement="per_tile", sram_bytes=1e15, sram_bw=1e30
    )


def model(layers=2, hidden=256, heads=4, vocab=512, seq=4096):
    """The conftest GPT (MHA, GeLU 4h, learned positions)."""
    return gpt_model(layers=layers, hidden=hidden, heads=heads, vocab=vocab, seq=seq)


def serving_spec(traffic: TrafficSpec, **scheduler) -> ServingSpec:
    sched = SchedulerSpec(**scheduler)
    return ServingSpec(
        traffic=traffic,
        scheduler=sched,
        slo=SloSpec(),
        dtype="fp16",
        weight_dtype="fp16",
        kv_dtype="fp16",
    )


def run(
    hw, mdl, spec: ServingSpec, requests: tuple[Request, ...] | None = None, seed: int = 0
) -> tuple[ServingPlan, ServingTrace]:
    chip = Chip.from_spec(hw)
    plan = map_serving(spec, hw, mdl, chip)
    if requests is None:
        requests = generate_requests(
            spec.traffic, np.random.default_rng(seed), mdl.max_position_embeddings
        )
    return plan, ServingSimulator(chip, plan, requests).run()
