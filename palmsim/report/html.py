"""``report.html``: one self-contained page of a run (pure: builds the text, writes nothing).

Figures are embedded as base64 ``data:`` URIs and the page references no external URL, so it
can be mailed. A small inline script counts the decoded images into ``data-images-decoded`` on
``<body>`` so a headless browser can check the page rendered every figure.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from palmsim.engine.records import RunTrace
from palmsim.hardware.chip import Chip
from palmsim.mapping.plan import MappingPlan
from palmsim.report.energy import ENERGY_COMPONENTS, energy_rows
from palmsim.report.figdata import hottest_links, link_loads
from palmsim.report.metrics import format_summary_table, tile_utilization
from palmsim.report.verdict import format_verdict, verdict

__all__ = ["Bottlenecks", "bottlenecks", "energy_section", "report_html"]

_TOP = 10

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].naturalWidth > 0) { ok++; } }
  document.body.setAttribute('data-images-decoded', String(ok));
  document.body.setAttribute('data-images-total', String(imgs.length));
});
"""

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.8em; }
img { max-width: 100%; border: 1px solid #eee; }
"""


@dataclass(frozen=True)
class Bottlenecks:
    """Where the iteration's time goes."""

    # group ("network links", "inter-die links", "DRAM channels") -> (name, kind, util, bytes)
    top_links: dict[str, list[tuple[str, str, float, float]]]
    top_tiles: list[tuple[int, int, float]]  # (tile, stage, compute utilisation)
    iteration_time_s: float
    bubble_fraction: float
    bubble_time_s: float  # bubble fraction × iteration time
    exposed_communication_s: float


def bottlenecks(
    trace: RunTrace, chip: Chip, plan: MappingPlan, summary: Mapping[str, Any]
) -> Bottlenecks:
    """The bottleneck analysis: hottest network, inter-die and DRAM channels, most loaded
    tiles, bubble and exposed communication time (from ``summary.json``)."""
    loads = link_loads(trace, chip)
    groups = {
        "network links": [x for x in loads if x.kind != "dram"],
        "inter-die links": [x for x in loads if x.kind == "inter_die"],
        "DRAM channels": [x for x in loads if x.kind == "dram"],
    }
    links = {
        group: [
            (f"{x.src}->{x.dst}", x.kind, x.utilization, x.carried_bytes)
            for x in hottest_links(members, _TOP)
        ]
        for group, members in groups.items()
        if members
    }
    util = tile_utilization(trace.intervals, plan.simulated_tiles, float(trace.end_time_s))
    stage_of = plan.stage_of_tile()
    tiles = sorted(util, key=lambda t: (-util[t], t))[:_TOP]
    iteration_s = float(summary["iteration_time_s"])
    bubble = float(summary["pipeline_bubble_fraction"])
    return Bottlenecks(
        links,
        [(t, stage_of[t], util[t]) for t in tiles],
        iteration_s,
        bubble,
        bubble * iteration_s,
        float(summary["exposed_communication_s"]),
    )


def _time(value_s: float) -> str:
    """Seconds as s, ms or µs, 4 significant digits."""
    if abs(value_s) >= 1.0:
        return f"{value_s:.4g} s"
    if abs(value_s) >= 1e-3:
        return f"{value_s * 1e3:.4g} ms"
    return f"{value_s * 1e6:.4g} µs"


def _bytes(value_bytes: float) -> str:
    """Bytes with a decimal prefix (link volumes, like the bandwidths in GB/s)."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value_bytes) >= scale:
            return f"{value_bytes / scale:.4g} {prefix}B"
    return f"{value_bytes:.0f} B"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def energy_section(summary: Mapping[str, Any]) -> list[str]:
    """The page's "Energy and cost" section: energy per iteration, token and sample, average
    power against the TDP, the breakdown by component and the cost rows."""
    parts = [
        "<h2>Energy and cost</h2>",
        _table(["", "value"], [[label, value] for label, value in energy_rows(summary)]),
    ]
    energy = summary.get("energy")
    if energy:
        total = float(energy["energy_per_iteration_j"])
        breakdown = energy["energy_breakdown_j"]
        parts.append(
            _table(
                ["component", "energy per iteration [J]", "share"],
                [
                    [name, f"{breakdown[name]:.6g}", f"{breakdown[name] / total:.1%}"]
                    for name in ENERGY_COMPONENTS
                    if name in breakdown and total > 0
                ],
            )
        )
    return parts


def report_html(
    summary: Mapping[str, Any],
    config: Mapping[str, Any],
    figures: Mapping[str, bytes],
    analysis: Bottlenecks,
) -> str:
    """The page: summary table, bottleneck analysis, every figure (PNG bytes by name), config."""
    title = f"palmsim: {summary.get('workload', '?')} on {summary.get('hardware', '?')}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"<script>{_SCRIPT}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p id="verdict"><strong>{html.escape(format_verdict(verdict(summary)))}</strong></p>',
        "<h2>Summary</h2>",
        f"<pre>{html.escape(format_summary_table(summary))}</pre>",
        *energy_section(summary),
        "<h2>Bottlenecks</h2>",
        _table(
            ["", "value"],
            [
                ["iteration time", _time(analysis.iteration_time_s)],
                [
                    "pipeline bubble",
                    f"{analysis.bubble_fraction:.1%} = {_time(analysis.bubble_time_s)}",
                ],
                ["exposed communication", _time(analysis.exposed_communication_s)],
            ],
        ),
    ]
    for group, rows in analysis.top_links.items():
        # Channels that carried traffic but round to 0.0 % say nothing: leave them out.
        shown = [r for r in rows if round(100 * r[2], 1) > 0]
        if not shown:
            continue
        parts.append(f"<h3>Most utilised {html.escape(group)}</h3>")
        parts.append(
            _table(
                ["link", "kind", "utilisation", "bytes carried"],
                [[n, k, f"{u:.1%}", _bytes(b)] for n, k, u, b in shown],
            )
        )
    tiles = [[str(t), str(s), f"{u:.1%}"] for t, s, u in analysis.top_tiles if u > 0]
    if tiles:
        parts += ["<h3>Most loaded tiles (busy / iteration)</h3>"]
        parts += [_table(["tile", "stage", "busy"], tiles)]
    parts += ["<h2>Figures</h2>"]
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    config_text = yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False)
    parts += [
        "<h2>Resolved configuration</h2>",
        f"<pre>{html.escape(config_text)}</pre>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)
