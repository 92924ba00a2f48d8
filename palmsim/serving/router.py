"""Routers: which replica an arriving request goes to."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["route"]


def route(router: str, request_index: int, outstanding: Sequence[int]) -> int:
    """The replica for the ``request_index``-th request (0-based, in arrival order).

    ``round_robin`` cycles through the replicas; ``least_loaded`` takes the replica with the
    fewest outstanding requests (waiting or running), the lowest index on a tie.
    """
    if router == "round_robin":
        return request_index % len(outstanding)
    if router == "least_loaded":
        return min(range(len(outstanding)), key=lambda r: (outstanding[r], r))
    raise AssertionError(f"unknown router {router!r} (the loader checks it)")
