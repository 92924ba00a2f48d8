"""A replica's scheduler as vLLM V1 has it: continuous batching, chunked prefill, a paged KV
cache and preemption by recompute, or by swap as vLLM V0 had it.

Every iteration (``Scheduler.schedule``) spends a token budget of ``max_num_batched_tokens``
(vllm/v1/core/sched/scheduler.py, ``Scheduler.schedule``):

1. running requests first, in order: each gets the tokens it has not computed yet (one for a
   decode, the rest of its prompt for a prefill), capped by the budget when chunked prefill
   is on (Agrawal et al., Sarathi-Serve, OSDI 2024: prefill chunks ride along with decodes);
   if the KV cache cannot hold them, the lowest-priority running request (the last admitted)
   is preempted: its blocks are freed and it returns to the head of the waiting queue, to
   recompute its prompt and the tokens it generated so far (vLLM's recompute preemption);
   with ``preemption_mode: swap`` its blocks are copied to host memory instead, when the
   swap space has room for them, and copied back when it is scheduled again (vLLM V0's
   ``PreemptionMode.SWAP``, vllm/core/scheduler.py ``_preempt_by_swap``); the engine adds
   each iteration's copy time to it;
2. then, if nothing was preempted, waiting requests in arrival order while fewer than
   ``max_num_seqs`` run and budget and KV blocks remain.

After the iteration (``Scheduler.complete``) a request whose every known token now has its KV
samples one token; the first is its first token, the ``output_tokens``-th finishes it.
A request that could never run alone (more KV blocks than the cache, or a prompt over the
token budget without chunked prefill) is rejected when it arrives, never left to hang.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from palmsim.config.specs import SchedulerSpec
from palmsim.serving.kvcache import BlockPool, KVGroups
from palmsim.serving.traffic import Request

__all__ = ["Entry", "RequestState", "Scheduler"]


@dataclass(slots=True)
class RequestState:
    """A request's progress on its replica (runtime state, not a spec)."""

    request: Request
    replica: int
    num_computed: int = 0  # tokens whose KV is in the cache
    num_generated: int = 0  # output tokens sampled
    num_blocks: int = 0  # KV blocks held
    num_preemptions: int = 0
    first_scheduled_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    rejected: bool = False
    shared_blocks: int = 0  # prefix-cache blocks it uses, held by the replica, not by it
    decode_replica: int = -1  # disaggregated serving: the replica it decodes on
    kv_transfer_start_s: float | None = None
    kv_transfer_end_s: float | None = None
    swapped_blocks: int = 0  # preempted by swap: KV blocks waiting in host memory
    in_flight_tokens: int = 0  # its tokens in batches still in the pipeline stages (pp > 1)

    @property
    def known_tokens(self) -> int:
        """Prompt plus the tokens generated so far."""
        return self.request.prompt_tokens + self.num_generated


class Entry(NamedTuple):
    """One request's share of an iteration: ``new_tokens`` computed over ``cached_tokens``;
    ``samples``: whether the iteration samples a token of the request (it computes the last
    of the request's known tokens)."""

    new_tokens: int
    cached_tokens: int
    samples: bool
    state: RequestState


def _entry(state: RequestState, new_tokens: int) -> Entry:
    cached = state.num_computed + state.in_flight_tokens
    known = state.request.prompt_tokens + state.num_generated
    return Entry(new_tokens, cached, cached + new_tokens == known, state)


class Scheduler:
    """One replica's waiting queue, running batch and KV-block pool."""

    def __init__(
        self,
        spec: SchedulerSpec,
        num_kv_blocks: int,
        *,
        prefill_only: bool = False,
        shared_prefix_tokens: int = 0,
        num_swap_blocks: int = 0,
        groups: KVGroups | None = None,
    ) -> None:
        self.spec = spec
        # Preemption by swap (vLLM V0's swap path): host memory for this many KV blocks; the
        # blocks moved out and in during the last schedule(), for the engine to time.
        self.swap_free = num_swap_blocks if spec.preemption_mode == "swap" else 0
        self.swapped_out_blocks = 0
        self.swapped_in_blocks = 0
        self.num_swaps = 0
        self.num_swapped_blocks = 0  # moved out and back in, over the run
        # Prefix caching (vLLM's automatic prefix caching, full blocks only): the shared
        # prompt prefix's full blocks, computed once, stay while some request uses them.
        self.prefix_blocks = (
            shared_prefix_tokens // spec.block_size if spec.enable_prefix_caching else 0
        )
        self.prefix_tokens = self.prefix_blocks * spec.block_size
        self.prefix_resident = False
        self.prefix_users = 0
        # Disaggregated prefill: a request leaves once it has sampled its first token.
        self.prefill_only = prefill_only
        self.pool = BlockPool(num_kv_blocks, spec.block_size, groups)
        self.waiting: deque[RequestState] = deque()
        self.running: list[RequestState] = []
        self.num_preemptions = 0

    @property
    def num_outstanding(self) -> int:
        """Requests waiting or running."""
        return len(self.waiting) + len(self.running)

    def add(self, state: RequestState) -> bool:
        """Queue an arriving request; False (and ``state.rejected``) if it could never run."""
        req = state.request
        peak = self.pool.peak_blocks(
            req.prompt_tokens + req.output_tokens, self.spec.max_num_batched_tokens
        )
        too_big = peak > self.pool.num_blocks
        unchunked = (
            not self.spec.enable_chunked_prefill
            and req.prompt_tokens + req.output_tokens > self.spec.max_num_batched_tokens
        )
        if too_big or unchunked:
            state.rejected = True
            return False
        self.waiting.append(state)
        return True

    def _release(self, state: RequestState) -> None:
        """Free the request's own blocks and its use of the prefix blocks."""
        self.pool.release(state.num_blocks)
        state.num_blocks = 0
        if state.shared_blocks:
            state.shared_blocks = 0
            self.prefix_users -= 1
            if self.prefix_users == 0:  # no request holds the prefix: its blocks are freed
                self.pool.release(self.prefix_blocks)
                self.prefix_resident = False

    def _preempt(self, victim: RequestState) -> None:
        """Free the victim's KV blocks and put it back at the head of the queue: its blocks
        go to host memory when there is room for them (swap; not a request sharing prefix
        blocks), else its KV is dropped, to be recomputed."""
        blocks = victim.num_blocks
        if not victim.shared_blocks and 0 < blocks <= self.swap_free:
            self.pool.release(blocks)
            victim.num_blocks = 0
            victim.swapped_blocks = blocks
            self.swap_free -= blocks
            self.swapped_out_blocks += blocks
            self.num_swapped_blocks += blocks
            self.num_swaps += 1
        else:
            self._release(victim)
            victim.num_computed = 0
        victim.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(victim)

    def _victim(self, first: int) -> RequestState | None:
        """The lowest-priority running request from index ``first`` on (those before it
        are in the batch being scheduled) with no tokens in a batch in flight, taken off
        the running list; None if there is none."""
        for i in range(len(self.running) - 1, first - 1, -1):
            if not self.running[i].in_flight_tokens:
                return self.running.pop(i)
        return None

    def schedule(self, now_s: float) -> list[Entry]:
        """The next iteration's batch (empty if nothing can run). A running request with
        tokens in a batch still in flight (pipeline stages, ``pp > 1``) gets the next chunk
        of its prompt, over the tokens in flight, if any is left (vLLM V1's scheduler counts
        a request's tokens computed when it schedules them), and is never preempted (its
        blocks are in use); a decode waits for its batch to return with the token."""
        spec, pool = self.spec, self.pool
        budget = spec.max_num_batched_tokens
        self.swapped_out_blocks = self.swapped_in_blocks = 0
        entries: list[Entry] = []
        preempted = stalled = False
        chunked = spec.enable_chunked_prefill
        hybrid, block_size = pool.groups.is_hybrid, pool.block_size
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            state = running[i]
            computed = state.num_computed + state.in_flight_tokens
            new = state.request.prompt_tokens + state.num_generated - computed
            if new <= 0:  # its last known token is in flight
                i += 1
                continue
            if chunked:
                new = min(new, budget)
            elif new > budget:
                i += 1
                continue
            total = computed + new
            held = state.num_blocks + state.shared_blocks
            if pool.blocks_for(total, computed) <= held if hybrid else total <= held * block_size:
                # fits in the blocks it holds (most decodes): nothing to allocate, but a
                # window's blocks it has left are freed
                if hybrid:
                    state.num_blocks = pool.grow(held, total, computed) - state.shared_blocks
                entries.append(_entry(state, new))
                budget -= new
                i += 1
                continue
            while not pool.can_hold(held, total, computed):
                victim = self._victim(i)
                if victim is None:  # the others are in flight or in this batch: wait,
                    stalled = True  # admitting no one
                    break
                self._preempt(victim)
                preempted = True
                if victim is state:
                    break
            else:
                state.num_blocks = pool.grow(held, total, computed) - state.shared_blocks
                entries.append(_entry(state, new))
                budget -= new
                i += 1
                continue
            break  # ``state`` itself was preempted, or nothing can make room for it
        if not preempted and not stalled:
            while self.waiting and len(self.running) < spec.max_num_seqs and budget > 0:
                state = self.waiting[0]
                # num_computed > 0 only for a request whose KV arrived from a prefill replica
                # or waits in host memory (swapped out)
                hit = (
                    self.prefix_resident
                    and state.num_computed == 0
                    and state.request.prompt_tokens > self.prefix_tokens
                )
                if hit:
                    state.num_computed = self.prefix_tokens
                shared = self.prefix_blocks if hit else 0
                new = state.known_tokens - state.num_computed
                if spec.enable_chunked_prefill:
                    new = min(new, budget)
                elif new > budget:
                    state.num_computed = 0 if hit else state.num_computed
                    break
                if not pool.can_hold(shared, state.num_computed + new, state.num_computed):
                    state.num_computed = 0 if hit else state.num_computed
                    break
                self.waiting.popleft()
                if hit:
                    state.shared_blocks = shared
                    self.prefix_users += 1
                total = state.num_computed + new
                state.num_blocks = pool.grow(shared, total, state.num_computed) - shared
                if state.swapped_blocks:  # its KV comes back from host memory
                    self.swapped_in_blocks += state.swapped_blocks
                    self.num_swapped_blocks += state.swapped_blocks
                    self.swap_free += state.swapped_blocks
                    state.swapped_blocks = 0
                self.running.append(state)
                entries.append(_entry(state, new))
                budget -= new
                if state.first_scheduled_s is None:
                    state.first_scheduled_s = now_s
        return entries

    def complete(self, entries: list[Entry], now_s: float) -> list[RequestState]:
        """Apply a finished iteration; returns the requests that leave the replica: finished
        (``finish_s`` set) or, on a prefill-only replica, with their first token."""
        finished: list[RequestState] = []
        for entry in entries:
            state = entry.state
            sampled = entry.samples
            state.num_computed += entry.new_tokens
            if (
                self.prefix_blocks
                and not self.prefix_resident
                and state.shared_blocks == 0
                and state.request.prompt_tokens > self.prefix_tokens
                and state.num_computed >= self.prefix_tokens
                and state.num_blocks >= self.prefix_blocks
            ):
                # its first blocks hold the shared prefix: the replica keeps them from now on
                state.num_blocks -= self.prefix_blocks
                state.shared_blocks = self.prefix_blocks
                self.prefix_resident = True
                self.prefix_users = 1
            if not sampled:
                continue
            state.num_generated += 1
            if state.first_token_s is None:
                state.first_token_s = now_s
            done = state.num_generated == state.request.output_tokens
            if done or self.prefill_only:
                if done:
                    state.finish_s = now_s
                self._release(state)
                self.running.remove(state)
                finished.append(state)
        return finished
