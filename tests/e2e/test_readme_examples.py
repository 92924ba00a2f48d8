"""Every ``palmsim run``/``describe``/``serve`` example of the README pairs files that load
and map.

The examples are read from the README's ``bash`` blocks (continuation lines joined), parsed by
palmsim's own argument parser, loaded and mapped onto their chip, without simulating. The
one example the README shows failing on purpose must fail the way it says.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from palmsim.cli import _load, build_parser
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.inference import map_inference
from palmsim.mapping.mapper import map_workload

REPO = Path(__file__).resolve().parents[2]

#: Examples the README shows exiting with code 3, as their comment says.
INFEASIBLE = {"palmsim run --schedule gpipe"}


def _examples(starts: tuple[str, ...] = ("palmsim run", "palmsim describe")) -> list[str]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in (p.strip() for p in line.split("&&")):
                if part.startswith(starts):
                    commands.append(part)
    return commands


def test_the_readme_has_run_and_describe_examples() -> None:
    examples = _examples()
    assert len(examples) >= 10
    assert any("describe" in e for e in examples)


@pytest.mark.parametrize("command", _examples())
def test_readme_example_loads_and_maps(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    args = build_parser().parse_args(shlex.split(command)[1:])
    experiment = _load(args)
    chip = Chip.from_spec(experiment.hardware)
    mapper = map_inference if experiment.workload.mode == "inference" else map_workload
    if command in INFEASIBLE:
        with pytest.raises(MappingError, match="does not fit"):
            mapper(experiment, chip)
        return
    plan = mapper(experiment, chip)
    assert plan.used_tiles


@pytest.mark.parametrize("command", _examples(("palmsim serve",)))
def test_readme_serve_example_loads_and_maps(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from palmsim.api import plan_serving

    monkeypatch.chdir(REPO)
    args = build_parser().parse_args(shlex.split(command)[1:])
    *_, plan, _ = plan_serving(
        args.hw, args.serving_workload, args.serving, overrides=args.overrides
    )
    assert plan.num_kv_blocks > 0
