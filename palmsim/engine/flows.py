"""The flow network the engine runs (the model: :mod:`palmsim.engine.flownet`).

:mod:`palmsim.engine.flownet` is plain Python; the install also compiles it with Cython into
:mod:`palmsim.engine.flownet_c` (``setup.py``), the same logic with C fields and doubles, so
the same floats in the same order and the same SimPy events: results are identical. This
module exports the compiled build when it is there and not older than flownet.py, else the
Python one (a machine without a C compiler installs without the build). ``PALMSIM_PURE_PYTHON=1``
in the environment, read once when this module is first imported, forces the Python one;
``palmsim --version`` says which runs.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from palmsim.engine import flownet

__all__ = ["IMPLEMENTATION", "FlowNetwork", "LastOf", "trigger_in"]

_log = logging.getLogger(__name__)


def _implementation() -> ModuleType:
    if os.environ.get("PALMSIM_PURE_PYTHON", "") not in ("", "0"):
        return flownet
    try:
        compiled = importlib.import_module("palmsim.engine.flownet_c")
    except ImportError:  # not built
        return flownet
    # In a source checkout (an editable install: setup.py beside the package) the build is
    # not redone when flownet.py changes, so a build older than its source may run old logic.
    source = Path(flownet.__file__)
    in_checkout = (source.parents[2] / "setup.py").is_file()
    if in_checkout and Path(compiled.__file__ or source).stat().st_mtime < source.stat().st_mtime:
        _log.warning(
            "the compiled flow network is older than palmsim/engine/flownet.py: running the "
            "Python one (reinstall, pip install -e ., to rebuild it)"
        )
        return flownet
    return compiled


_MODULE = _implementation()
#: Which build of the flow network runs: "compiled" or "python".
IMPLEMENTATION = "python" if _MODULE is flownet else "compiled"

if TYPE_CHECKING:
    from palmsim.engine.flownet import FlowNetwork, LastOf, trigger_in
else:
    FlowNetwork = _MODULE.FlowNetwork
    LastOf = _MODULE.LastOf
    trigger_in = _MODULE.trigger_in
