"""What the figures say: titles, legends, colour bars and units, read off the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from palmsim.api import load_experiment, simulate

plots = pytest.importorskip("palmsim.report.plots")


def _left_title(ax: Any) -> Any:
    """The artist of an axes' left title (``ax.title`` is the centre one)."""
    from matplotlib.text import Text

    text = ax.get_title(loc="left")
    return next(t for t in ax.findobj(Text) if t.get_text() == text and text)


def _texts(fig: Any) -> list[str]:
    """Every text of a figure: titles, axis labels, legend entries, colour bar, free text."""
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(loc="left"), ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        legend = ax.get_legend()
        if legend is not None:
            out += [t.get_text() for t in legend.get_texts()]
    return [t for t in out if t]


@pytest.fixture(scope="module")
def gpu_run() -> Any:
    """Llama-2 7B cut to 2 layers on 4 DGX H100 nodes: pp=1, tp=8, dp=4 (one stage)."""
    experiment = load_experiment(
        "dgx-h100",
        "llama2-7b",
        overrides=["model.num_hidden_layers=2", "training.global_batch_size=8"],
        mapping_flags={"pp": 1, "tp": 8, "dp": 4, "micro_batch_size": 1},
    )
    return simulate(experiment)


@pytest.fixture(scope="module")
def wafer_run() -> Any:
    """T-18B cut to 4 layers on the TX8 wafer: pp=2, tp=16, 4 micro-batches."""
    experiment = load_experiment(
        "tx8-wafer",
        "t-18b",
        overrides=["model.num_hidden_layers=4", "training.global_batch_size=32"],
        mapping_flags={"pp": 2, "tp": 16, "micro_batch_size": 8},
    )
    return simulate(experiment)


def test_gpu_cluster_noc_draws_nvlink_and_nic_channels(gpu_run: Any) -> None:
    """Every GPU gets two bars (NVLink, NIC), labelled as such; nothing speaks of NoC links."""
    fig = plots.noc_figure(gpu_run.trace, gpu_run.chip, gpu_run.plan)
    bars = [c for c in fig.axes[0].collections if c.get_array() is not None]
    assert sum(len(c.get_segments()) for c in bars) == 2 * gpu_run.chip.num_tiles
    text = " ".join(_texts(fig))
    assert "NVLink and NIC channels by utilisation" in text
    assert "[NVLink]" in text and "[NIC]" in text
    assert "inter-die" not in text and "NoC" not in text


def test_noc_speaks_percent_and_human_bytes(wafer_run: Any) -> None:
    fig = plots.noc_figure(wafer_run.trace, wafer_run.chip, wafer_run.plan)
    texts = _texts(fig)
    assert "utilisation [%]" in texts  # the colour bar, in % as the summary
    listing = next(t for t in fig.texts if "hottest" in t.get_text()).get_text()
    assert " %" in listing and "e+" not in listing and "e-" not in listing
    assert any(u in listing for u in (" GB", " MB", " TB"))
    assert all("utilization" not in t for t in texts)
    bytes_fig = plots.noc_figure(wafer_run.trace, wafer_run.chip, wafer_run.plan, by="bytes")
    assert "bytes carried [GB]" in _texts(bytes_fig)


@pytest.fixture(scope="module")
def chips_run() -> Any:
    """Llama-3-8B cut to 2 layers served on a T3000: 8 one-tile chips joined by Ethernet."""
    experiment = load_experiment(
        "wormhole-t3000",
        "llama3-8b",
        overrides=[
            "workload.mode=inference",
            "model.num_hidden_layers=2",
            "inference.prompt_len=64",
            "inference.output_len=2",
        ],
        mapping_flags={"tp": 8},
    )
    return simulate(experiment)


@pytest.mark.parametrize("run", ["chips_run", "wafer_run", "gpu_run"])
def test_noc_listing_title_and_colour_bar_fit_the_figure_apart(
    run: str, request: pytest.FixtureRequest
) -> None:
    """The hottest-channel listing, the title and the colour bar lie inside the figure, the
    listing clear of the colour bar and its label, at the resolution the figure is saved at
    (a T3000's 2 x 4 chips made a figure shorter than its listing, which ran off it)."""
    result = request.getfixturevalue(run)
    fig = plots.noc_figure(result.trace, result.chip, result.plan)
    fig.set_dpi(110)  # plots.noc's
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    listing = next(t for t in fig.texts if "hottest" in t.get_text())
    boxes = {
        "listing": listing.get_window_extent(renderer),
        "title": _left_title(fig.axes[0]).get_window_extent(renderer),
        "colour bar": fig.axes[1].get_tightbbox(renderer),
    }
    for name, box in boxes.items():
        assert page.x0 <= box.x0 and box.x1 <= page.x1, name
        assert page.y0 <= box.y0 and box.y1 <= page.y1, name
    assert boxes["colour bar"].x1 < boxes["listing"].x0


@pytest.mark.parametrize("run", ["chips_run", "wafer_run", "gpu_run"])
def test_placement_title_fits_the_figure(run: str, request: pytest.FixtureRequest) -> None:
    """A floorplan narrower than its title (a T3000's eight chips) widens the figure to it."""
    result = request.getfixturevalue(run)
    fig = plots.placement_figure(result.chip, result.plan)
    fig.set_dpi(110)  # plots.placement's
    box = _left_title(fig.axes[0]).get_window_extent(fig.canvas.get_renderer())
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1


def test_noc_of_one_tile_chips_names_chip_to_chip_links_once(chips_run: Any) -> None:
    """On a system of one-tile chips every link joins two chips: the title says so, and the
    hottest links are listed once, not again as inter-die links."""
    fig = plots.noc_figure(chips_run.trace, chips_run.chip, chips_run.plan)
    text = " ".join(_texts(fig))
    assert "chip-to-chip links by utilisation" in text and "NoC" not in text
    assert "hottest inter-die links" not in text


@pytest.mark.parametrize(
    ("power_w", "tdp_w", "said"),
    [(102.7, 160.0, "average power 102.7 W;\n64% of TDP 160 W"), (2582.0, 4800.0, "2.582 kW")],
)
def test_energy_title_gives_power_in_the_unit_that_reads(
    monkeypatch: pytest.MonkeyPatch, power_w: float, tdp_w: float, said: str
) -> None:
    """An n150's 102.7 W read '0.1027 kW' and its TDP '0.16 kW'; kW from 1 kW on."""
    drawn: list[Any] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: drawn.append(fig) or path)
    energy = {
        "energy_breakdown_j": {"compute": 1.0, "dram": 2.0},
        "energy_per_iteration_j": 3.0,
        "energy_per_token_j": 3.78,
        "average_power_w": power_w,
        "tdp_w": tdp_w,
        "average_power_fraction_of_tdp": power_w / tdp_w,
    }
    plots.energy_breakdown({"energy": energy}, "unused.png")
    assert said in drawn[0].axes[0].get_title()


def test_noc_of_one_tile_says_there_is_no_link() -> None:
    """One Wormhole chip, one tile: the listing says no link joins two tiles (it was a
    heading over nothing)."""
    experiment = load_experiment(
        "wormhole-n150",
        "llama3-8b",
        overrides=[
            "workload.mode=inference",
            "model.num_hidden_layers=1",
            "inference.prompt_len=32",
            "inference.output_len=2",
        ],
        mapping_flags={"tp": 1},
    )
    result = simulate(experiment)
    fig = plots.noc_figure(result.trace, result.chip, result.plan)
    assert "(none: no link joins two of the run's tiles)" in " ".join(_texts(fig))


def test_memory_names_estimate_and_simulated_peak_apart(wafer_run: Any) -> None:
    """Bars are the plan's estimate, diamonds the simulated peak; GiB once bars reach 0.5 GiB;
    the 3 MiB SRAM line, invisible on a GiB axis, is named in the legend instead."""
    fig = plots.memory_figure(wafer_run.chip, wafer_run.plan, wafer_run.trace)
    texts = _texts(fig)
    assert "simulated peak" in texts and "activations (estimate)" in texts
    assert "bytes per tile [GiB]" in texts
    assert "SRAM capacity (3 MiB), off scale" in texts
    assert "peak" not in " ".join(t for t in texts if t.endswith("(estimate)"))
    bars = plots.memory_bars(wafer_run.chip, wafer_run.plan, wafer_run.trace)
    for bar in bars:  # the simulated peak never exceeds the estimate (activations in flight)
        assert bar.simulated_peak_bytes is not None
        assert bar.simulated_peak_bytes <= sum(bar.parts_bytes.values()) * (1 + 1e-12)


def test_placement_with_one_stage_colours_dp_replicas(gpu_run: Any) -> None:
    fig = plots.placement_figure(gpu_run.chip, gpu_run.plan)
    texts = _texts(fig)
    assert [t for t in texts if t.startswith("DP replica")] == [f"DP replica {r}" for r in range(4)]
    assert any("colour: DP replica" in t and "outlines: nodes" in t for t in texts)
    # the tile squares are one collection (one face colour per tile)
    faces = [tuple(c) for coll in fig.axes[0].collections for c in coll.get_facecolor()]
    faces += [tuple(p.get_facecolor()) for p in fig.axes[0].patches if p.get_fill()]
    colours = {c for c in faces if c[3] > 0 and c != (0.933, 0.933, 0.933, 1.0)}
    assert len(colours) >= 4


def test_placement_names_a_2d_tensor_parallel_grid(gpu_run: Any) -> None:
    """tp_2d [a, b] is named beside the TP degree: "TP 8 (4 x 2)"; 1-D TP as the degree."""
    import dataclasses

    texts = _texts(plots.placement_figure(gpu_run.chip, gpu_run.plan))
    assert any("1 stage × TP 8 × DP 4" in t for t in texts)
    mapping = dataclasses.replace(gpu_run.plan.mapping, tp_2d=(4, 2))
    plan = dataclasses.replace(gpu_run.plan, mapping=mapping)
    texts = _texts(plots.placement_figure(gpu_run.chip, plan))
    assert any("× TP 8 (4 x 2) × DP 4" in t for t in texts)


def test_gantt_legend_lists_only_the_kinds_in_the_run(tmp_path: Path, gpu_run: Any) -> None:
    """A training run has no prefill/decode; the comm strip is apart from every pass colour."""
    assert plots.COMM_COLOR not in plots.CATEGORY_COLORS.values()
    fig = plots.gantt_figure(gpu_run.trace, gpu_run.plan)
    legend = _texts(fig)
    assert "forward" in legend and "backward" in legend
    assert "prefill" not in legend and "decode" not in legend


def test_gantt_title_counts_stages_and_micro_batches(gpu_run: Any, wafer_run: Any) -> None:
    """One stage reads "1 stage", not "p=1 stages" (the GPU run: 8 samples over 4 replicas,
    one a micro-batch: 2); the wafer run's 2 stages and 32 / 8 = 4 micro-batches."""
    one = _texts(plots.gantt_figure(gpu_run.trace, gpu_run.plan))
    assert any(": 1 stage, 2 micro-batches" in t for t in one)
    two = _texts(plots.gantt_figure(wafer_run.trace, wafer_run.plan))
    assert any(": 2 stages, 4 micro-batches" in t for t in two)
