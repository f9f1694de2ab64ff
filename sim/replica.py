"""A modelled vLLM replica: continuous batching over a paged KV cache with prefix caching.

The scheduler follows vLLM V1's shape. Each engine step:

1. every running request that finished its prefill decodes one token;
2. requests still prefilling get the next chunk of their uncached prompt, first come first
   served, within the step's token budget (``max_num_batched_tokens`` minus the decodes;
   no budget when the cost model has none: whole prompts in one step);
3. waiting requests are admitted in order while the budget, ``max_batch`` and the KV cache
   allow; the first that does not fit blocks those behind it (FCFS).

A request's first token comes at the end of the step that completes its prefill; each later
step gives it one more. The step time is ``CostModel.step_s``. A run of pure decode steps is
simulated as one "macro step" up to the next completion; an arrival cuts it at the next step
boundary (``interrupt``), so timing is the same as stepping one by one.

KV cache (``kv_cache.BlockTree``): ``kv_capacity_blocks`` blocks. A request's full prompt
blocks are keyed by their chained hashes; it hits the longest prefix of its chain already
cached (at most ``(prompt_tokens - 1) // block_size`` blocks: vLLM recomputes the last token
for logits). On admission its hashed blocks are pinned (inserted if new) and blocks for the
partial prompt block and every output token are reserved; unpinned cached blocks are
evicted least recently released first, a chain from its end (vLLM's LRU with blocks freed
in reverse order). At completion its blocks are unpinned and the full blocks of its output
(``SimRequest.output_block_hashes``) join the cache. Reserving output blocks at admission
replaces vLLM's preemption: a request that could run out of blocks waits instead of being
preempted later.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

from kaon.sim.cost_model import CostModel
from kaon.sim.kv_cache import BlockTree
from kaon.sim.workload import SimRequest


@dataclass(slots=True)
class ActiveRequest:
    """A request inside a replica. Times are absolute simulation seconds (-1: not yet)."""

    sim: SimRequest
    enqueued_s: float
    admitted_s: float = -1.0
    first_token_s: float = -1.0
    finished_s: float = -1.0
    cached_tokens: int = 0
    prefill_left_tokens: int = 0
    private_blocks: int = 0
    finish_at_step: int = 0
    pending_estimate_tokens: int = 0


@dataclass(slots=True, frozen=True)
class ReplicaStats:
    """What a real replica reports (vLLM's gauges and prefix-cache counters)."""

    running_requests: int
    waiting_requests: int
    kv_cache_usage: float
    prefix_cache_hits_tokens: int
    prefix_cache_queries_tokens: int


class SimReplica:
    """One modelled engine. The simulator drives it: ``enqueue`` a request, ``start_step``
    when idle (returns when the step ends, or None if idle), ``finish_step`` at that time
    (returns the requests whose first token came and those that finished), ``interrupt`` to
    cut a macro step when an arrival may change the batch."""

    def __init__(self, replica_id: str, cost: CostModel, track_pending: bool = False):
        self.replica_id = replica_id
        self.cost = cost
        self.waiting: deque[ActiveRequest] = deque()
        self.prefilling: deque[ActiveRequest] = deque()
        self._decoding: list[tuple[int, int, ActiveRequest]] = []
        self._seq = 0
        self.clock_steps = 0
        self.cache = BlockTree()
        self._private_blocks = 0
        self.prefix_hits_tokens = 0
        self.prefix_queries_tokens = 0
        # chains and prefill work of waiting requests (kept for the oracle only)
        self.track_pending = track_pending
        self.pending = BlockTree()
        self.pending_prefill_tokens = 0
        self.prefilling_tokens = 0  # prompt tokens admitted but not yet prefilled
        # the step in flight
        self.busy = False
        self.version = 0  # bumped whenever the end of the step in flight changes
        self._run_start_s = 0.0
        self._run_step_s = 0.0
        self._run_steps = 0
        self._run_chunks: list[tuple[ActiveRequest, int]] = []

    # --- what the outside sees ---------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._decoding) + len(self.prefilling)

    @property
    def decoding(self) -> int:
        return len(self._decoding)

    @property
    def idle(self) -> bool:
        return not (self.waiting or self.prefilling or self._decoding)

    def stats(self) -> ReplicaStats:
        used = self.cache.pinned_blocks + self._private_blocks
        return ReplicaStats(self.running, len(self.waiting), used / self.cost.kv_capacity_blocks,
                            self.prefix_hits_tokens, self.prefix_queries_tokens)

    def cached_prefix_blocks(self, hashes: tuple[int, ...], include_pending: bool = False) -> int:
        """Length of the longest prefix of ``hashes`` in the cache (or, with
        ``include_pending``, in the cache or among the chains of waiting requests)."""
        cached = self.cache.match(hashes)[0]
        if include_pending and self.pending.blocks:
            cached = max(cached, self.pending.match(hashes)[0])
        return cached

    def steps_until_finished(self, count: int) -> int:
        """Decode steps until ``count`` of the decoding requests have finished (0 if none
        need to; all of them if ``count`` exceeds them)."""
        if count <= 0 or not self._decoding:
            return 0
        last = heapq.nsmallest(min(count, len(self._decoding)), self._decoding)[-1][0]
        return max(last - self.clock_steps, 0)

    # --- driving it ----------------------------------------------------------------------

    def enqueue(self, sim: SimRequest, now_s: float) -> ActiveRequest:
        active = ActiveRequest(sim, now_s)
        self.waiting.append(active)
        if self.track_pending:
            hashes = sim.request.block_hashes
            cached = self.cached_prefix_blocks(hashes, include_pending=True)
            active.pending_estimate_tokens = sim.request.prompt_tokens - cached * self.cost.block_size_tokens
            self.pending_prefill_tokens += active.pending_estimate_tokens
            self.pending.acquire(hashes, self.pending.match(hashes)[0])
        return active

    def start_step(self, now_s: float) -> float | None:
        """Plan the next step (or macro step) at ``now_s``; its end time, None if idle."""
        assert not self.busy
        cost = self.cost
        decodes = len(self._decoding)
        budget = math.inf if cost.max_num_batched_tokens is None else cost.max_num_batched_tokens - decodes
        chunks: list[tuple[ActiveRequest, int]] = []
        prefill_tokens = 0
        for active in self.prefilling:
            if budget <= 0:
                break
            chunk = min(active.prefill_left_tokens, budget)
            chunks.append((active, chunk))
            prefill_tokens += chunk
            budget -= chunk
        while self.waiting and budget > 0 and decodes + len(self.prefilling) < cost.max_batch:
            active = self.waiting[0]
            if not self._admit(active, now_s):
                break
            self.waiting.popleft()
            self.prefilling.append(active)
            chunk = min(active.prefill_left_tokens, budget)
            chunks.append((active, chunk))
            prefill_tokens += chunk
            budget -= chunk
        if not chunks and not decodes:
            return None
        self.busy = True
        self.version += 1
        self._run_start_s = now_s
        self._run_chunks = chunks
        if chunks:
            self._run_steps = 1
            self._run_step_s = cost.step_s(prefill_tokens, decodes)
        else:  # pure decode until the next completion; nothing can join before one
            self._run_steps = self._decoding[0][0] - self.clock_steps
            self._run_step_s = cost.decode_step_s(decodes)
        return now_s + self._run_steps * self._run_step_s

    def interrupt(self, now_s: float) -> float | None:
        """Cut a macro step at the first step boundary at or after ``now_s``; the new end
        time, or None if nothing changed (a single step, or the boundary is its end)."""
        if not self.busy or self._run_steps <= 1:
            return None
        done = max(1, math.ceil((now_s - self._run_start_s) / self._run_step_s - 1e-9))
        if done >= self._run_steps:
            return None
        self._run_steps = done
        self.version += 1
        return self._run_start_s + done * self._run_step_s

    @property
    def step_end_s(self) -> float:
        return self._run_start_s + self._run_steps * self._run_step_s

    def finish_step(self, now_s: float) -> tuple[list[ActiveRequest], list[ActiveRequest]]:
        """Apply the step that ends at ``now_s``: (first tokens, finished requests)."""
        assert self.busy
        self.busy = False
        self.clock_steps += self._run_steps
        first: list[ActiveRequest] = []
        finished: list[ActiveRequest] = []
        decoding = self._decoding
        while decoding and decoding[0][0] <= self.clock_steps:
            finished.append(heapq.heappop(decoding)[2])
        for active, chunk in self._run_chunks:
            active.prefill_left_tokens -= chunk
            self.prefilling_tokens -= chunk
            if active.prefill_left_tokens == 0:
                if self.prefilling[0] is active:
                    self.prefilling.popleft()
                else:
                    self.prefilling.remove(active)
                active.first_token_s = now_s
                first.append(active)
                if active.sim.output_tokens <= 1:
                    finished.append(active)
                else:
                    active.finish_at_step = self.clock_steps + active.sim.output_tokens - 1
                    self._seq += 1
                    heapq.heappush(decoding, (active.finish_at_step, self._seq, active))
        self._run_chunks = []
        for active in finished:
            active.finished_s = now_s
            self._release(active, now_s)
        return first, finished

    # --- KV cache ------------------------------------------------------------------------

    def _admit(self, active: ActiveRequest, now_s: float) -> bool:
        """Pin the request's cached prefix and reserve its other blocks; False if they do not
        fit even after evicting every unpinned cached block."""
        cost = self.cost
        request = active.sim.request
        hashes = request.block_hashes
        cache = self.cache
        matched, unpinned = cache.match(hashes)
        private = cost.blocks_for(request.prompt_tokens + active.sim.output_tokens) - len(hashes)
        need = len(hashes) - matched + private
        free = cost.kv_capacity_blocks - cache.blocks - self._private_blocks
        if need > free + cache.evictable_blocks - unpinned:
            return False
        cache.acquire(hashes, matched, evict=max(need - free, 0))
        self._private_blocks += private
        active.private_blocks = private
        active.admitted_s = now_s
        hit = min(matched, max(request.prompt_tokens - 1, 0) // cost.block_size_tokens)
        active.cached_tokens = hit * cost.block_size_tokens
        active.prefill_left_tokens = request.prompt_tokens - active.cached_tokens
        self.prefilling_tokens += active.prefill_left_tokens
        self.prefix_queries_tokens += request.prompt_tokens
        self.prefix_hits_tokens += active.cached_tokens
        if self.track_pending:
            self.pending.forget(hashes)
            self.pending_prefill_tokens -= active.pending_estimate_tokens
        return True

    def _release(self, active: ActiveRequest, now_s: float) -> None:
        self._private_blocks -= active.private_blocks
        cache = self.cache
        room = self.cost.kv_capacity_blocks - cache.blocks - self._private_blocks
        cache.release(active.sim.request.block_hashes, now_s, active.sim.output_block_hashes, room)
