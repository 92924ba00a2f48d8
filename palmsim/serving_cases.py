"""Cases of published serving measurements (``kind: serving_run``), checked by ``palmsim
validate`` against palmsim's serving simulator.

``validation/serving_runs.yaml`` transcribes serving benchmarks as published (vLLM's
``benchmark_serving`` run at a fixed input and output length and a fixed concurrency, e.g. the
vLLM rows of Tenstorrent's model release reports). A case names a shipped hardware config
(``hardware.config``) and its tensor parallelism (``hardware.tp``), the model by its shape
(``model``, as the tiled-accelerator cases give it), and the benchmark (``serving``):
``input_tokens``, ``output_tokens``, ``concurrency`` and ``num_requests``, the weight and
KV-cache formats, and optionally the scheduler limits the server ran with.

palmsim serves the case's requests with a closed loop of ``concurrency`` clients (traffic
``arrival: closed``, as the benchmark's ``--max-concurrency`` with ``--request-rate inf``): the
first ``concurrency`` requests are sent at once and each later one when a request finishes.
It compares, each as the benchmark defines it (means over the run's requests):

- ``ttft_ms``: time from a request's arrival to its first token;
- ``tpot_ms``: (finish - first token) / (output tokens - 1);
- ``e2el_ms``: arrival to last token;
- ``request_throughput_per_s``: requests / (last finish - first arrival).

Nothing is fitted: the hardware config, the model shape and the benchmark's settings are the
only inputs. :func:`predict` returns ``(metric, measured, predicted)`` triples or raises
:class:`~palmsim.tile_cases.CannotExpressError` with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from palmsim.api import shipped_path
from palmsim.config.loader import load_hardware
from palmsim.config.overrides import outside_sections
from palmsim.config.specs import (
    DTYPE_BYTES,
    SchedulerSpec,
    ServingSpec,
    SloSpec,
    TrafficSpec,
)
from palmsim.tile_cases import (
    TT_INFERENCE_SERVER_MAX_NUM_SEQS,
    TT_TRANSFORMERS_OPS_PER_LAYER,
    CannotExpressError,
    case_model,
    ccl_overrides_of_code,
    decode_attention_settings,
    decode_readers_per_bank,
    positive_count,
    prefill_compute_cores,
    prefill_weight_readers,
    tt_metal_mlp_formats,
)

__all__ = ["METRICS", "assumptions", "is_serving_case", "predict", "serving_spec"]

#: The figures a case may give, each a mean over the benchmark's requests.
METRICS = ("ttft_ms", "tpot_ms", "e2el_ms", "request_throughput_per_s")
#: Most requests a case may ask palmsim to serve.
MAX_REQUESTS = 10_000
_FORMATS = tuple(DTYPE_BYTES)
_FIDELITIES = ("LoFi", "HiFi2", "HiFi3", "HiFi4")


def is_serving_case(case: Mapping[str, Any]) -> bool:
    """Whether ``case`` is a published serving measurement (``kind: serving_run``)."""
    return case.get("kind") == "serving_run"


def assumptions(case: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The case's settings it does not state, as ``(key, value, why)``: its ``assumed:`` list
    (``validate`` marks every figure of the case as resting on them)."""
    out = []
    given = case.get("assumed")
    for item in given if isinstance(given, list) else ():  # predict names any other value
        if isinstance(item, Mapping) and "key" in item:
            out.append((str(item["key"]), str(item.get("value", "")), str(item.get("why", ""))))
    return out


def _format(serving: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = serving.get(key)
    if value is None:  # unstated, or stated as null
        value = default
    if value is None:
        return None
    if value not in _FORMATS:
        raise CannotExpressError(f"serving.{key} {value!r} is not one of {', '.join(_FORMATS)}")
    return str(value)


def _fidelity(serving: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    table = serving.get("math_fidelity") or {}
    if not isinstance(table, Mapping):
        raise CannotExpressError(f"serving.math_fidelity {table!r} is not a mapping")
    for fmt, fid in table.items():
        if fmt not in _FORMATS or fid not in _FIDELITIES:
            raise CannotExpressError(f"serving.math_fidelity {fmt}: {fid} not understood")
    return tuple(sorted((str(k), str(v)) for k, v in table.items()))


def serving_spec(case: Mapping[str, Any]) -> ServingSpec:
    """The :class:`ServingSpec` of a case: its benchmark as closed-loop traffic on one replica.

    Raises:
        CannotExpressError: a field missing or out of range.
    """
    serving = case.get("serving")
    hardware = case.get("hardware")
    if not isinstance(serving, Mapping) or not isinstance(hardware, Mapping):
        raise CannotExpressError("needs 'serving' and 'hardware' mappings")
    requests = positive_count(serving.get("num_requests"), "serving.num_requests")
    if requests > MAX_REQUESTS:
        raise CannotExpressError(f"num_requests {requests}: more than {MAX_REQUESTS}")
    traffic = TrafficSpec(
        "closed",
        num_requests=requests,
        concurrency=positive_count(serving.get("concurrency"), "serving.concurrency"),
        lengths="fixed",
        prompt_tokens=positive_count(serving.get("input_tokens"), "serving.input_tokens"),
        output_tokens=positive_count(serving.get("output_tokens"), "serving.output_tokens"),
    )
    limits: dict[str, Any] = {
        key: positive_count(serving[key], f"serving.{key}")
        for key in ("max_num_seqs", "max_num_batched_tokens", "block_size")
        if key in serving
    }
    weight = _format(serving, "weight_dtype", "bf16")
    kv = _format(serving, "kv_dtype", weight)
    assert weight is not None and kv is not None
    # the MLP's formats as its engine runs them (tt-metal's bfp8 down projection beside bfp4
    # FF1/FF3, tt_transformers' bfp8 experts) where the case does not give the down one
    engine = str(serving.get("engine"))
    mlp = _format(serving, "mlp_weight_dtype", None)
    down = _format(serving, "mlp_down_weight_dtype", None)
    if mlp is not None and down is None:
        moe = case_model(case, traffic.prompt_tokens + traffic.output_tokens + 1).is_moe
        mlp, down = tt_metal_mlp_formats(engine, mlp, moe)
    return ServingSpec(
        traffic=traffic,
        scheduler=SchedulerSpec(**limits),  # vLLM V1's defaults for the rest
        slo=SloSpec(),
        tp=positive_count(hardware.get("tp", 1), "hardware.tp"),
        dtype="bf16",
        weight_dtype=weight,
        kv_dtype=kv,
        mlp_weight_dtype=mlp,
        mlp_down_weight_dtype=down,
        math_fidelity=_fidelity(serving),
        # The serving code's own op count where the case names it (a tt_transformers model,
        # as in palmsim/tile_cases.py).
        ops_per_layer=(TT_TRANSFORMERS_OPS_PER_LAYER if "tt_transformers" in engine else 0),
        # and decodes with DRAM-sharded matmuls, one core per DRAM bank (as the demo rows)
        decode_readers_per_bank=decode_readers_per_bank(engine),
        # and gives each request the SDPA decode cores its grid has for the batch it is
        # built for, the server's max_num_seqs, as the demo rows run it
        **decode_attention_settings(
            engine, limits.get("max_num_seqs", TT_INFERENCE_SERVER_MAX_NUM_SEQS)
        ),
        # and prefills with 2-D multicast matmuls whose column readers bring the weights
        prefill_weight_readers=(
            prefill_weight_readers(engine, shipped_path(str(hardware["config"])))
            if hardware.get("config")
            else 0  # predict names the missing config
        ),
        # on its 8 x 8 prefill grid (as the demo rows)
        prefill_compute_cores=prefill_compute_cores(engine),
    )


def predict(
    case: Mapping[str, Any], overrides: Sequence[str] = ()
) -> list[tuple[str, float, float]]:
    """``(metric, measured, predicted)`` for each figure of :data:`METRICS` the case gives,
    with ``overrides`` (``--set`` strings, ``hw.`` only: the case gives its own serving set-up
    and model) applied to its hardware.

    Raises:
        CannotExpressError: the case lacks a field palmsim needs, a field is malformed, it
            gives none of the metrics or an override is of another section; the message says
            which.
        PalmsimError: the configuration does not fit (a MappingError) or cannot run.
    """
    other = outside_sections(overrides, ("hw",))
    if other:
        raise CannotExpressError(
            f"--set {other[0]}: a serving case takes its model and serving set-up from its own "
            "fields; only hw.* applies"
        )
    for name in ("hardware", "model", "serving", "measured"):
        if not isinstance(case.get(name), Mapping):
            got = case.get(name)
            raise CannotExpressError(f"{name}: got {got!r}; expected a mapping of fields")
    assumed = case.get("assumed")
    if assumed is not None and not (
        isinstance(assumed, list) and all(isinstance(a, Mapping) for a in assumed)
    ):
        raise CannotExpressError(
            f"assumed: got {assumed!r}; expected a list of mappings with key, value and why"
        )
    try:
        return _predict(case, tuple(overrides))
    except (LookupError, TypeError, ValueError, AttributeError, ArithmeticError) as error:
        raise CannotExpressError(f"malformed case ({type(error).__name__}: {error})") from None


def hardware_config(case: Mapping[str, Any]) -> tuple[str, str]:
    """The shipped config a case runs on, its ``hardware.config``, and why, for the report.

    Raises:
        CannotExpressError: the case names none.
    """
    hardware = case.get("hardware")
    config = hardware.get("config") if isinstance(hardware, Mapping) else None
    if not config:
        raise CannotExpressError("hardware.config (a shipped hardware config) missing")
    return str(config), "hardware.config"


def _predict(case: Mapping[str, Any], user: Sequence[str]) -> list[tuple[str, float, float]]:
    """:func:`predict` of a case whose sections are mappings, ``user`` the ``--set``
    overrides."""
    from palmsim.engine.serving import ServingSimulator
    from palmsim.hardware.chip import Chip
    from palmsim.mapping.serving import map_serving
    from palmsim.serving.traffic import generate_requests

    measured = case.get("measured")
    if not isinstance(measured, Mapping):
        raise CannotExpressError("no 'measured' figures")
    wanted = [m for m in METRICS if isinstance(measured.get(m), (int, float))]
    if not wanted:
        raise CannotExpressError(f"none of {', '.join(METRICS)} in 'measured'")
    spec = serving_spec(case)
    # the collectives its engine calls (tt_transformers' generic CCL ops on a Galaxy, as
    # lines over more than 8 chips)
    path = shipped_path(hardware_config(case)[0])
    engine = str(case["serving"].get("engine"))
    hw = load_hardware(path, [*ccl_overrides_of_code(engine, path, spec.tp), *user])
    traffic = spec.traffic
    model = case_model(case, traffic.prompt_tokens + traffic.output_tokens + 1)
    chip = Chip.from_spec(hw)
    plan = map_serving(spec, hw, model, chip)
    requests = generate_requests(traffic, np.random.default_rng(0), model.max_position_embeddings)
    trace = ServingSimulator(chip, plan, requests).run()
    done = [r for r in trace.requests if r.status == "finished"]
    if len(done) < len(trace.requests):
        raise CannotExpressError("some requests were rejected (larger than the KV cache)")
    ttft = np.array([r.first_token_s - r.arrival_s for r in done])
    e2e = np.array([r.finish_s - r.arrival_s for r in done])
    steps = traffic.output_tokens - 1
    tpot = np.array([(r.finish_s - r.first_token_s) / steps for r in done]) if steps else None
    span = max(r.finish_s for r in done) - min(r.arrival_s for r in done)
    predicted = {
        "ttft_ms": float(ttft.mean()) * 1e3,
        "e2el_ms": float(e2e.mean()) * 1e3,
        "request_throughput_per_s": len(done) / span,
    }
    if tpot is not None:
        predicted["tpot_ms"] = float(tpot.mean()) * 1e3
    return [(m, float(measured[m]), predicted[m]) for m in wanted if m in predicted]
