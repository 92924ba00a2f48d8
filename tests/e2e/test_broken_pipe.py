"""``palmsim ... | head``: when the reader closes the pipe, palmsim stops quietly as Unix
tools do (exit 141, what a shell reports for SIGPIPE), with no BrokenPipeError message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from palmsim.cli import EXIT_BROKEN_PIPE

REPO = Path(__file__).resolve().parents[2]


def _into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run palmsim with stdout a pipe whose reader has already gone."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        return subprocess.run(
            [sys.executable, "-m", "palmsim.cli", *argv],
            stdout=write_fd,
            stderr=subprocess.PIPE,
            cwd=REPO,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_fd)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_describe_into_a_closed_pipe_exits_quietly() -> None:
    done = _into_closed_pipe(["describe"])
    assert done.returncode == EXIT_BROKEN_PIPE == 141
    assert done.stderr == b""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_validate_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """A measurement file of one single-operator case: validate simulates nothing and
    prints its table and the "not run" list."""
    shipped = yaml.safe_load((REPO / "validation" / "measurements.yaml").read_text())
    cases = [c for c in shipped["cases"] if c["id"] == "llmcompass_a100_gemm_fp16"]
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({"schema": shipped["schema"], "cases": cases}))
    done = _into_closed_pipe(["validate", str(path), "-q"])
    assert done.returncode == EXIT_BROKEN_PIPE
    assert done.stderr == b""
