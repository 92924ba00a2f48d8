"""Serving metrics: pure functions of a :class:`~palmsim.engine.serving.ServingTrace`.

Definitions (docs/metrics.md, "Serving runs"), over the finished requests:

- TTFT ``first_token_s - arrival_s``; TPOT ``(finish_s - first_token_s) / (output_tokens - 1)``
  (the mean inter-token time, over requests of two or more output tokens); end-to-end latency
  ``finish_s - arrival_s``; queueing delay ``first_scheduled_s - arrival_s``. Each at p50, p90,
  p99 (linear interpolation between order statistics, numpy's default) and its mean.
- Throughput over the run's duration, from 0 to the last finish: requests/s, output tokens/s
  and total (prompt + output) tokens/s.
- Goodput: requests/s meeting both SLO limits (TTFT and TPOT at or below them); SLO
  attainment: their fraction of all requests (rejected ones count as missed); ``slo_met``:
  attainment at least the SLO quantile.
- Over time: KV-cache use (blocks in use / blocks, per iteration), the waiting queue and
  the requests in the system (time averages and maxima), preemptions, batch size.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import yaml

from palmsim.config.specs import SloSpec
from palmsim.engine.serving import IterationRecord, QueueRecord, RequestRecord, ServingTrace
from palmsim.report.energy import serving_energy_rows

__all__ = [
    "LATENCY_QUANTILES",
    "format_serving_table",
    "latencies",
    "serving_report_html",
    "summarize_serving",
    "time_average",
]

#: Quantiles every latency is reported at.
LATENCY_QUANTILES = (50, 90, 99)


def latencies(requests: Sequence[RequestRecord]) -> dict[str, np.ndarray]:
    """Per finished request: ``ttft_s``, ``tpot_s`` (NaN for one output token), ``e2e_s`` and
    ``queue_s``, in request order."""
    done = [r for r in requests if r.status == "finished"]
    ttft = np.array([r.first_token_s - r.arrival_s for r in done], dtype=float)
    tpot = np.array(
        [
            (r.finish_s - r.first_token_s) / (r.output_tokens - 1)
            if r.output_tokens > 1
            else np.nan
            for r in done
        ],
        dtype=float,
    )
    e2e = np.array([r.finish_s - r.arrival_s for r in done], dtype=float)
    queue = np.array([r.first_scheduled_s - r.arrival_s for r in done], dtype=float)
    return {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "queue_s": queue}


def time_average(
    queue: Sequence[QueueRecord], field: str, end_time_s: float, num_replicas: int
) -> tuple[float, int]:
    """Time average over ``[0, end_time_s]`` and maximum of a queue count summed over the
    replicas (``num_waiting`` or ``num_in_system``); each replica's count holds from one of
    its records to its next and is 0 before its first."""
    current = [0] * num_replicas
    total = 0
    area = 0.0
    peak = 0
    last = 0.0
    for rec in sorted(queue, key=lambda q: q.time_s):  # stable: same-time records keep order
        area += total * (rec.time_s - last)
        last = rec.time_s
        value = getattr(rec, field)
        total += value - current[rec.replica]
        current[rec.replica] = value
        peak = max(peak, total)
    area += total * (end_time_s - last)
    return (area / end_time_s if end_time_s > 0 else 0.0), peak


def _quantiles(values: np.ndarray, name: str) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {f"{name}_p{q}_s": float("nan") for q in LATENCY_QUANTILES} | {
            f"{name}_mean_s": float("nan")
        }
    out = {f"{name}_p{q}_s": float(np.percentile(values, q)) for q in LATENCY_QUANTILES}
    out[f"{name}_mean_s"] = float(values.mean())
    return out


def _iteration_stats(iterations: Sequence[IterationRecord], kv_blocks: int) -> dict[str, Any]:
    if not iterations:
        return {
            "kv_cache_util_mean": 0.0,
            "kv_cache_util_max": 0.0,
            "batch_size_mean": 0.0,
            "batch_tokens_mean": 0.0,
        }
    spans = np.array([i.end_s - i.start_s for i in iterations])
    used = np.array([i.kv_blocks_used for i in iterations], dtype=float) / kv_blocks
    seqs = np.array([i.num_seqs for i in iterations], dtype=float)
    busy = spans.sum()
    return {
        "kv_cache_util_mean": float((used * spans).sum() / busy) if busy > 0 else 0.0,
        "kv_cache_util_max": float(used.max()),
        "batch_size_mean": float((seqs * spans).sum() / busy) if busy > 0 else 0.0,
        "batch_tokens_mean": float(np.mean([i.num_tokens for i in iterations])),
    }


def summarize_serving(trace: ServingTrace, slo: SloSpec) -> dict[str, Any]:
    """The serving summary (``summary.json``): every key in docs/metrics.md."""
    lat = latencies(trace.requests)
    done = [r for r in trace.requests if r.status == "finished"]
    duration = max((r.finish_s for r in done), default=0.0)
    tpot_ok = np.where(np.isnan(lat["tpot_s"]), True, lat["tpot_s"] <= slo.tpot_s)
    good = int(np.sum((lat["ttft_s"] <= slo.ttft_s) & tpot_ok))
    total = len(trace.requests)
    attainment = good / total if total else 0.0
    output_tokens = sum(r.output_tokens for r in done)
    prompt_tokens = sum(r.prompt_tokens for r in done)
    per = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    queue_mean, queue_max = time_average(
        trace.queue, "num_waiting", trace.end_time_s, trace.num_replicas
    )
    system_mean, system_max = time_average(
        trace.queue, "num_in_system", trace.end_time_s, trace.num_replicas
    )
    summary: dict[str, Any] = {
        "num_requests": total,
        "num_finished": len(done),
        "num_rejected": total - len(done),
        "num_replicas": trace.num_replicas,
        "duration_s": duration,
        "throughput_requests_per_s": per(len(done)),
        "throughput_output_tokens_per_s": per(output_tokens),
        "throughput_tokens_per_s": per(output_tokens + prompt_tokens),
        "goodput_requests_per_s": per(good),
        "slo_ttft_s": slo.ttft_s,
        "slo_tpot_s": slo.tpot_s,
        "slo_quantile": slo.quantile,
        "slo_attainment": attainment,
        "slo_met": attainment >= slo.quantile,
        "queue_length_mean": queue_mean,
        "queue_length_max": queue_max,
        "requests_in_system_mean": system_mean,
        "requests_in_system_max": system_max,
        "num_preemptions": sum(r.num_preemptions for r in trace.requests),
        "num_swaps": int(trace.metadata.get("num_swaps", 0)),
        "kv_cache_blocks": trace.num_kv_blocks,
        # block tables a request holds (vLLM V1's KV cache groups: a block holds one's layers)
        "kv_cache_groups": int(trace.metadata.get("kv_cache_groups", 1)),
        "num_iterations": len(trace.iterations),
        "num_shapes_simulated": trace.num_shapes_costed,
        "num_iterations_closed_form": trace.num_closed_form,
        "replicas_share_channels": bool(trace.metadata.get("replicas_share_channels", False)),
        "wall_time_s": trace.wall_time_s,
    }
    for name in ("ttft", "tpot", "e2e", "queue"):
        summary |= _quantiles(lat[f"{name}_s"], name)
    summary |= _iteration_stats(trace.iterations, trace.num_kv_blocks)
    return summary


def format_serving_table(summary: dict[str, Any]) -> str:
    """The summary table ``palmsim serve`` prints (latencies in ms below 1 s, else in s)."""

    def ms(key: str) -> str:
        value = summary[key]
        return f"{value:.4g} s" if value >= 1 else f"{value * 1e3:.4g} ms"

    def lat(name: str) -> str:
        return " / ".join(ms(f"{name}_p{q}_s") for q in LATENCY_QUANTILES)

    rows = [
        ("requests", f"{summary['num_finished']} finished, {summary['num_rejected']} rejected"),
        ("duration", f"{summary['duration_s']:.4g} s"),
        ("TTFT p50/p90/p99", lat("ttft")),
        ("TPOT p50/p90/p99", lat("tpot")),
        ("e2e p50/p90/p99", lat("e2e")),
        ("queueing p50/p90/p99", lat("queue")),
        (
            "throughput",
            f"{summary['throughput_requests_per_s']:.4g} requests/s, "
            f"{summary['throughput_output_tokens_per_s']:.4g} output tokens/s",
        ),
        (
            "goodput",
            f"{summary['goodput_requests_per_s']:.4g} requests/s "
            f"(SLO TTFT <= {summary['slo_ttft_s'] * 1e3:.4g} ms, TPOT <= "
            f"{summary['slo_tpot_s'] * 1e3:.4g} ms: {summary['slo_attainment'] * 100:.1f} % of "
            f"requests, {'met' if summary['slo_met'] else 'missed'} at "
            f"{summary['slo_quantile'] * 100:.0f} %)",
        ),
        (
            "KV cache",
            f"{summary['kv_cache_blocks']} blocks per replica"
            + (
                f" in {summary['kv_cache_groups']} groups of layers"
                if summary["kv_cache_groups"] > 1
                else ""
            )
            + ", use mean "
            f"{summary['kv_cache_util_mean'] * 100:.1f} %, "
            f"max {summary['kv_cache_util_max'] * 100:.1f} %",
        ),
        (
            "batch",
            f"mean {summary['batch_size_mean']:.3g} requests, "
            f"{summary['batch_tokens_mean']:.4g} tokens per iteration",
        ),
        ("queue", f"mean {summary['queue_length_mean']:.3g}, max {summary['queue_length_max']}"),
        ("preemptions", f"{summary['num_preemptions']} ({summary['num_swaps']} by swap)"),
        (
            "iterations",
            f"{summary['num_iterations']} ({summary['num_shapes_simulated']} distinct "
            f"segments simulated, {summary['num_iterations_closed_form']} in closed form)",
        ),
        *serving_energy_rows(summary),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def serving_report_html(
    summary: Mapping[str, Any], config: Mapping[str, Any], figures: Mapping[str, bytes]
) -> str:
    """``report.html`` of a serving run: the summary table, the figures (embedded) and the
    resolved configuration. Pure: returns the page."""
    images = "".join(
        f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        for name, data in figures.items()
    )
    table = html.escape(format_serving_table(dict(summary)))
    resolved = html.escape(yaml.safe_dump(json.loads(json.dumps(config, default=str))))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>palmsim serving report</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}"
        "img{max-width:100%}</style></head><body><h1>palmsim serving report</h1>"
        f"<pre>{table}</pre>{images}<h2>configuration</h2><pre>{resolved}</pre></body></html>\n"
    )
