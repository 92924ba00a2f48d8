"""The compiled flow network and flownet.py as plain Python give the same simulation.

Each build runs in its own interpreter, chosen as a user chooses it: ``PALMSIM_PURE_PYTHON=1``
in the environment forces flownet.py, and without it the compiled build runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Simulate a small wafer run (DRAM ports shared by the tiles of a stage, TP rings and pipeline
# sends on the NoC: flows that contend) and print which build ran and every record, in order.
_CHILD = r"""
import hashlib, json
from palmsim.api import load_experiment, simulate
from palmsim.engine import flows
experiment = load_experiment(
    "hw_configs/tx8-wafer.yaml", "workloads/t-18b.yaml",
    overrides=["model.num_hidden_layers=8", "training.global_batch_size=64"],
    mapping_flags={"pp": 4, "tp": 8, "dp": 2, "micro_batch_size": 4, "schedule": "gpipe"},
)
trace = simulate(experiment).trace
digest = hashlib.sha256()
for kind in ("intervals", "flows", "memory"):
    for record in getattr(trace, kind):
        digest.update(repr(tuple(record)).encode())
print(json.dumps({"implementation": flows.IMPLEMENTATION, "num_flows": len(trace.flows),
                  "records": digest.hexdigest(), "end_time_s": repr(trace.end_time_s),
                  "events": trace.num_events}))
"""


def _child(argv: list[str], pure: str | None) -> str:
    """Run ``python argv`` in the repository with PALMSIM_PURE_PYTHON set to ``pure`` (None:
    unset); its standard output."""
    env = {k: v for k, v in os.environ.items() if k != "PALMSIM_PURE_PYTHON"}
    if pure is not None:
        env["PALMSIM_PURE_PYTHON"] = pure
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, check=True, env=env, cwd=REPO
    )
    return done.stdout


def _simulate(pure: bool) -> dict:
    return json.loads(_child(["-c", _CHILD], "1" if pure else None).splitlines()[-1])


def test_compiled_and_pure_python_flow_networks_give_identical_records():
    """Same records, in the same order, to the last bit, with the same end time and the same
    SimPy events; and each interpreter ran the build it was asked for."""
    compiled, pure = _simulate(pure=False), _simulate(pure=True)
    assert (compiled["implementation"], pure["implementation"]) == ("compiled", "python")
    assert compiled["num_flows"] > 1000  # a run with many flows, not a trivial one
    compiled.pop("implementation"), pure.pop("implementation")
    assert compiled == pure


@pytest.mark.parametrize(
    ("pure", "shown"), [(None, "compiled"), ("0", "compiled"), ("1", "python")]
)
def test_version_says_which_build_runs(pure, shown):
    """``palmsim --version`` names the build: compiled unless PALMSIM_PURE_PYTHON is set (and
    not 0)."""
    out = _child(["-m", "palmsim.cli", "--version"], pure)
    assert out.strip().endswith(f"(flow network: {shown})")


def test_without_the_build_the_python_flow_network_runs():
    """A machine that installed without a C compiler has no palmsim.engine.flownet_c: the
    import fails (here: made to fail) and flownet.py runs, without an error."""
    code = (
        "import sys; sys.modules['palmsim.engine.flownet_c'] = None\n"
        "from palmsim.engine import flownet, flows\n"
        "print(flows.IMPLEMENTATION, flows.FlowNetwork is flownet.FlowNetwork)"
    )
    assert _child(["-c", code], None).split() == ["python", "True"]
