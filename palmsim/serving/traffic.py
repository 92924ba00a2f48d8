"""Request traffic: arrival times and prompt/output lengths, from a seeded generator.

Arrival processes:

- ``poisson``: exponential inter-arrival times of mean ``1/rate``;
- ``gamma``: gamma inter-arrival times of mean ``1/rate`` and coefficient of variation ``cv``
  (shape ``k = 1/cv²``, scale ``1/(rate·k)``); ``cv > 1`` is bursty, ``cv = 1`` is Poisson. This
  is the bursty process of AlpaServe (Li et al., OSDI 2023, Sec. 6.1) and DistServe;
- ``trace``: the rows of a CSV file, used as given;
- ``closed``: a closed loop of ``concurrency`` clients (vLLM's ``benchmark_serving``
  ``--max-concurrency`` with ``--request-rate inf``): the first ``concurrency`` requests arrive
  at 0 and each later one the instant a request in flight finishes. Their arrival times are
  set by the simulation; here they are 0.

Length distributions (``lengths``), each a log-normal with the median and 90th percentile of
its data set (``mu = ln(median)``, ``sigma = ln(p90 / median) / z₀.₉`` with ``z₀.₉ = 1.2816``,
the standard normal's 90th percentile), rounded to whole tokens, at least 1:

- ``sharegpt``: chat, openchat_sharegpt4: prompt median 1730, p90 5696 tokens; output
  median 415, p90 834 (Agrawal et al., "Taming Throughput-Latency Tradeoff in LLM Inference
  with Sarathi-Serve", OSDI 2024, Sec. 5 "Datasets", Table 2);
- ``summarization``: long-context summarisation, arxiv_summarization: prompt median 7059,
  p90 12985; output median 208, p90 371 (same table);
- ``code``: code completion, the Azure LLM inference trace 2023 (code) that Splitwise
  published (Patel et al., ISCA 2024; 8,819 requests): prompt median 1469, p90 5188; output
  median 13, p90 55. Computed here from the trace's rows (numpy ``median`` and
  ``percentile(.., 90)``, linear interpolation, rounded) as Vidur ships it
  (microsoft/vidur ``data/processed_traces/splitwise_code.csv``);
- ``fixed``: every request has ``prompt_tokens`` and ``output_tokens``.

VERIFICATION STATUS (checked 2026-12-04): the two prompt *medians* of Sarathi-Serve's Table 2
(1730 and 7059) agree with a published summary of the paper; the paper itself could not be
read from here, so its 90th percentiles and its output-token quantiles (5696, 12985, 415,
834, 208, 371) remain unverified transcriptions. They could not be re-derived from data
either: Vidur's copy of the arxiv trace is filtered to 4,096 tokens (its median prompt is
2730), not the trace the table describes. The ``code`` quantiles are computed from the
published trace itself.

With ``shared_prefix_tokens`` every generated prompt starts with the same system prompt of that
many tokens, added to its drawn length (what prefix caching can reuse).

A request whose prompt and output exceed the model's context is shortened: its prompt is
truncated to ``context - output`` tokens (as a client truncates its input), its output to
``context - 1`` first. The log-normal is an assumption about the shape; the two quantiles are
the published facts it is fitted to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from palmsim.config.specs import TrafficSpec

__all__ = ["LENGTH_QUANTILES", "Request", "generate_requests"]

#: The standard normal's 90th percentile.
_Z90 = 1.2815515655446004

#: lengths -> ((prompt median, prompt p90), (output median, output p90)) in tokens; sources
#: and what of them is verified in the module docstring.
LENGTH_QUANTILES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    # Sarathi-Serve (OSDI 2024) Table 2; medians corroborated, p90s and outputs unverified
    "sharegpt": ((1730.0, 5696.0), (415.0, 834.0)),
    "summarization": ((7059.0, 12985.0), (208.0, 371.0)),
    # Azure LLM inference trace 2023, code (Splitwise, ISCA 2024), computed from its rows
    "code": ((1469.0, 5188.0), (13.0, 55.0)),
}


@dataclass(frozen=True, slots=True)
class Request:
    """One request: when it arrives, its prompt and how many tokens it generates."""

    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


def _lognormal_tokens(rng: np.random.Generator, median: float, p90: float, size: int) -> np.ndarray:
    mu = math.log(median)
    sigma = math.log(p90 / median) / _Z90
    return np.maximum(1, np.rint(rng.lognormal(mu, sigma, size))).astype(np.int64)


def generate_requests(
    traffic: TrafficSpec, rng: np.random.Generator, max_context_tokens: int
) -> tuple[Request, ...]:
    """The run's requests in arrival order (ids 0..n-1), drawn from ``rng``.

    The same spec and generator state give the same requests (byte-identical runs).
    """
    if traffic.arrival == "trace":
        rows = traffic.trace
        arrivals = np.array([r[0] for r in rows], dtype=float)
        prompts = np.array([r[1] for r in rows], dtype=np.int64)
        outputs = np.array([r[2] for r in rows], dtype=np.int64)
    else:
        n = traffic.num_requests
        mean_gap_s = 1.0 / traffic.rate_per_s
        if traffic.arrival == "closed":
            gaps = np.zeros(n)
        elif traffic.arrival == "poisson":
            gaps = rng.exponential(mean_gap_s, n)
        else:
            shape = 1.0 / traffic.cv**2
            gaps = rng.gamma(shape, mean_gap_s / shape, n)
        arrivals = np.cumsum(gaps)
        if traffic.lengths == "fixed":
            prompts = np.full(n, traffic.prompt_tokens, dtype=np.int64)
            outputs = np.full(n, traffic.output_tokens, dtype=np.int64)
        else:
            (p_med, p_90), (o_med, o_90) = LENGTH_QUANTILES[traffic.lengths]
            prompts = _lognormal_tokens(rng, p_med, p_90, n)
            outputs = _lognormal_tokens(rng, o_med, o_90, n)
        prompts = prompts + traffic.shared_prefix_tokens
    outputs = np.minimum(outputs, max_context_tokens - 1)
    prompts = np.minimum(prompts, max_context_tokens - outputs)
    return tuple(
        Request(i, float(a), int(p), int(o))
        for i, (a, p, o) in enumerate(zip(arrivals, prompts, outputs, strict=True))
    )
