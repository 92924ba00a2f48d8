"""The fuzz harness itself (scripts/fuzz.py run_child): it must never block on what a command
leaves behind, must kill a hung command with everything it started, and must measure the
peak memory it checks rather than assume it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from scripts.fuzz import run_child

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forks and reads Linux ru_maxrss")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ")[1][0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def _leave_grandchild(argv: list[str]) -> int:
    """Start a grandchild that inherits stdout/stderr and outlives the command."""
    child = subprocess.Popen(["sleep", "600"])
    with open(argv[0], "w", encoding="ascii") as note:
        note.write(str(child.pid))
    return 0


def test_a_grandchild_holding_the_output_does_not_block(tmp_path) -> None:
    note = tmp_path / "pid"
    start = time.monotonic()
    code, _, _, tb, _ = run_child([str(note)], 30.0, 2**31, entry=_leave_grandchild)
    assert (code, tb) == (0, "")
    assert time.monotonic() - start < 20  # the grandchild sleeps 600 s
    grandchild = int(note.read_text())
    for _ in range(100):  # killed with its group; reaped by init
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    assert not _alive(grandchild)


def _hang(argv: list[str]) -> int:
    child = subprocess.Popen(["sleep", "600"])
    with open(argv[0], "w", encoding="ascii") as note:
        note.write(str(child.pid))
    time.sleep(600)
    return 0


def test_a_hung_command_is_killed_with_its_group(tmp_path) -> None:
    note = tmp_path / "pid"
    code, seconds, _, _, message = run_child([str(note)], 1.0, 2**31, entry=_hang)
    assert code is None and "time limit" in message
    assert 1.0 <= seconds < 10
    grandchild = int(note.read_text())
    for _ in range(100):
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    assert not _alive(grandchild)


def _allocate_300_mib(argv: list[str]) -> int:
    block = bytearray(300 * 2**20)  # zero pages: touch one byte per 4 KiB page
    for i in range(0, len(block), 4096):
        block[i] = 1
    return 0


def test_peak_rss_is_measured() -> None:
    code, _, rss, tb, _ = run_child([], 30.0, 2**31, entry=_allocate_300_mib)
    assert (code, tb) == (0, "")
    assert rss >= 300 * 2**20


def _print_traceback(argv: list[str]) -> int:
    os.write(2, b"Traceback (most recent call last):\n  boom\nValueError: x\n")
    return 2


def test_a_printed_traceback_counts() -> None:
    code, _, _, tb, _ = run_child([], 30.0, 2**31, entry=_print_traceback)
    assert code == 2 and "ValueError" in tb
