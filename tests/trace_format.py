"""A checker of the Chrome Trace Event format (the subset palmsim writes), for tests."""

from __future__ import annotations

from collections import Counter
from typing import Any

#: Required keys per phase (Trace Event Format, "JSON Array/Object Format" document).
REQUIRED: dict[str, tuple[str, ...]] = {
    "M": ("name", "pid", "tid", "args"),
    "X": ("name", "pid", "tid", "ts", "dur", "cat"),
    "C": ("name", "pid", "ts", "args"),
    "s": ("name", "pid", "tid", "ts", "id", "cat"),
    "f": ("name", "pid", "tid", "ts", "id", "cat", "bp"),
}


def check_trace_events(events: list[dict[str, Any]]) -> Counter[str]:
    """Assert every event is valid; return the count of events per phase."""
    phases: Counter[str] = Counter()
    flow_ends: dict[Any, Counter[str]] = {}
    for event in events:
        ph = event["ph"]
        assert ph in REQUIRED, event
        phases[ph] += 1
        for key in REQUIRED[ph]:
            assert key in event, (key, event)
        assert type(event["pid"]) is int, event
        if "tid" in event:
            assert type(event["tid"]) is int, event
        if ph != "M":
            assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0, event
        if ph == "X":
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0, event
        if ph == "C":
            assert event["args"], event
            assert all(isinstance(v, (int, float)) for v in event["args"].values()), event
        if ph in ("s", "f"):
            flow_ends.setdefault((event["cat"], event["id"]), Counter())[ph] += 1
            if ph == "f":
                assert event["bp"] == "e"
    for key, ends in flow_ends.items():
        assert ends == Counter({"s": 1, "f": 1}), (key, ends)
    return phases
