"""Token-level workloads for the simulator: ``RoutingRequest``s with vLLM-style block hashes,
plus arrival times.

Prompts are random token ids (seeded numpy), never text: only their lengths and which
prefixes requests share matter to a router and a KV cache. Block hashes are chained like
vLLM's prefix cache: block i's hash is ``hash((hash of block i-1, tuple of its token ids))``
over full blocks only (a trailing partial block has no hash), starting from ``ROOT_HASH``.
Python hashes of int tuples do not depend on PYTHONHASHSEED, so runs are reproducible.

Generators are lazy and unbounded unless given ``num_requests`` (a 10-minute run at
hundreds of requests/s must not hold every prompt in memory); ``with_arrivals`` zips them
with arrival times and stops at the shorter of the two. Shapes follow the field's benchmarks:

- ``shared_prefix``: SGLang ``generated-shared-prefix`` (groups × prompts per group, one
  system prompt per group, a distinct question per request), repeated in rounds with fresh
  questions when more requests are asked for than groups × prompts; optionally with
  Zipf-skewed group popularity (``group_skew``).
- ``multi_turn``: production-stack multi-round QA: users × rounds, one system prompt shared
  by every user, each round's prompt = the user's whole history + a new question. A round is
  held until the user's previous round finished (``after_request_id``), and the answer's full
  blocks are cached when it finishes (``output_block_hashes``), as vLLM caches generated
  tokens. New cohorts of users follow when more requests are asked for.
- ``random_lengths``: independent prompts of uniform random length; nothing is shared.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from kaon.bench.workloads import zipf_weights
from kaon.routing.snapshot import RoutingRequest

ROOT_HASH = 0
VOCAB_SIZE = 32000
FIRST_TOKEN_ID = 5  # skip the special-token ids of kaon's tiny tokenizer


@dataclass(slots=True)
class SimRequest:
    """One request of a simulated run. ``arrival_s`` is when it reaches the router (or, with
    ``after_request_id``, the earliest time: it waits until that request, which must come
    earlier in the same stream, has finished)."""

    request: RoutingRequest
    output_tokens: int
    arrival_s: float = 0.0
    group_id: str = ""
    after_request_id: str | None = None
    output_block_hashes: tuple[int, ...] = ()

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def prompt_tokens(self) -> int:
        return self.request.prompt_tokens


def chain_hashes(tokens: Sequence[int], block_size_tokens: int, parent: int = ROOT_HASH) -> list[int]:
    """vLLM-style chained hashes of the full blocks of ``tokens`` after ``parent``."""
    hashes = []
    for start in range(0, len(tokens) - block_size_tokens + 1, block_size_tokens):
        parent = hash((parent, tuple(tokens[start:start + block_size_tokens])))
        hashes.append(parent)
    return hashes


class _Chain:
    """A token sequence kept as (full-block hashes, trailing partial block) so that it can be
    extended without rehashing its past."""

    __slots__ = ("hashes", "tail", "length", "block_size")

    def __init__(self, block_size: int):
        self.hashes: list[int] = []
        self.tail: list[int] = []
        self.length = 0
        self.block_size = block_size

    def extend(self, tokens: list[int]) -> None:
        merged = self.tail + tokens
        full = len(merged) - len(merged) % self.block_size
        parent = self.hashes[-1] if self.hashes else ROOT_HASH
        self.hashes += chain_hashes(merged[:full], self.block_size, parent)
        self.tail = merged[full:]
        self.length += len(tokens)


class _Tokens:
    """Random token ids drawn from a seeded generator in large batches (per-request numpy
    calls would dominate a long run's cost)."""

    __slots__ = ("_rng", "_buffer", "_at")
    BATCH = 1 << 16

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._buffer: list[int] = []
        self._at = 0

    def take(self, n: int) -> list[int]:
        if self._at + n > len(self._buffer):
            self._buffer = self._buffer[self._at:] + self._rng.integers(
                FIRST_TOKEN_ID, VOCAB_SIZE, size=max(self.BATCH, n)).tolist()
            self._at = 0
        self._at += n
        return self._buffer[self._at - n:self._at]


def shared_prefix(
    num_groups: int = 64,
    prompts_per_group: int = 16,
    system_prompt_tokens: int = 2048,
    question_tokens: int = 128,
    output_tokens: int = 256,
    block_size_tokens: int = 16,
    seed: int = 0,
    num_requests: int | None = None,
    group_skew: float = 0.0,
) -> Iterator[SimRequest]:
    """SGLang's generated-shared-prefix shape (defaults are SGLang's). Each round is
    ``num_groups`` × ``prompts_per_group`` requests in a seeded order: every group's
    ``prompts_per_group``, or, with ``group_skew`` S > 0, groups drawn from the Zipf law of
    ``kaon.bench.workloads.zipf_weights`` (group k's share ∝ 1 / (k + 1) ** S: a few hot
    system prompts and a long tail, as the bench's generator draws them)."""
    rng = np.random.default_rng(seed)
    tokens = _Tokens(rng)
    prefixes = []
    for _ in range(num_groups):
        chain = _Chain(block_size_tokens)
        chain.extend(tokens.take(system_prompt_tokens))
        prefixes.append((tuple(chain.hashes), chain.tail, chain.hashes[-1] if chain.hashes else ROOT_HASH))
    prompt_len = system_prompt_tokens + question_tokens
    groups = _group_order(rng, num_groups, prompts_per_group, group_skew)
    for index, group in enumerate(groups):
        if num_requests is not None and index >= num_requests:
            return
        head, tail, parent = prefixes[group]
        hashes = head + tuple(chain_hashes(tail + tokens.take(question_tokens), block_size_tokens, parent))
        yield SimRequest(RoutingRequest(f"sp-{index}", hashes, prompt_len), output_tokens, group_id=f"g{group}")


def _group_order(rng: np.random.Generator, num_groups: int, prompts_per_group: int, skew: float) -> Iterator[int]:
    """Endless rounds of group ids: each group ``prompts_per_group`` times, shuffled, or
    (``skew`` ≠ 0) as many Zipf draws. Lazy, so a round is drawn when it is reached."""
    weights = np.asarray(zipf_weights(num_groups, skew)) if skew != 0 else None
    size = num_groups * prompts_per_group
    while True:
        if weights is None:
            order = np.repeat(np.arange(num_groups), prompts_per_group)
            rng.shuffle(order)
        else:
            order = rng.choice(num_groups, size=size, p=weights)
        yield from order.tolist()


def multi_turn(
    num_users: int = 32,
    num_rounds: int = 8,
    system_prompt_tokens: int = 1024,
    question_tokens: int = 128,
    output_tokens: int = 256,
    block_size_tokens: int = 16,
    seed: int = 0,
    num_requests: int | None = None,
) -> Iterator[SimRequest]:
    """Multi-round chat: rounds in order (every user's round 0, then round 1, …)."""
    rng = np.random.default_rng(seed)
    tokens = _Tokens(rng)
    system = tokens.take(system_prompt_tokens)
    count = itertools.count()
    for cohort in itertools.count():
        users = []
        for _ in range(num_users):
            chain = _Chain(block_size_tokens)
            chain.extend(system)
            users.append(chain)
        previous: list[str | None] = [None] * num_users
        for round_index in range(num_rounds):
            for user, chain in enumerate(users):
                index = next(count)
                if num_requests is not None and index >= num_requests:
                    return
                chain.extend(tokens.take(question_tokens))
                prompt_hashes, prompt_len = tuple(chain.hashes), chain.length
                chain.extend(tokens.take(output_tokens))
                request_id = f"mt-{index}"
                yield SimRequest(
                    RoutingRequest(request_id, prompt_hashes, prompt_len), output_tokens,
                    group_id=f"c{cohort}u{user}", after_request_id=previous[user],
                    output_block_hashes=tuple(chain.hashes[len(prompt_hashes):]),
                )
                previous[user] = request_id


def random_lengths(
    input_tokens: tuple[int, int] = (128, 2048),
    output_tokens: tuple[int, int] = (32, 512),
    block_size_tokens: int = 16,
    seed: int = 0,
    num_requests: int | None = None,
) -> Iterator[SimRequest]:
    """Independent prompts; lengths uniform in the inclusive ranges."""
    rng = np.random.default_rng(seed)
    tokens = _Tokens(np.random.default_rng([seed, 1]))
    for index in itertools.count():
        if num_requests is not None and index >= num_requests:
            return
        n_in = int(rng.integers(input_tokens[0], input_tokens[1] + 1))
        n_out = int(rng.integers(output_tokens[0], output_tokens[1] + 1))
        hashes = chain_hashes(tokens.take(n_in), block_size_tokens)
        yield SimRequest(RoutingRequest(f"rnd-{index}", tuple(hashes), n_in), n_out, group_id="")


# --- arrival times ----------------------------------------------------------------------


def poisson_arrivals(rate_per_s: float, duration_s: float, seed: int = 0, start_s: float = 0.0) -> list[float]:
    """Poisson process of ``rate_per_s`` over [start_s, start_s + duration_s)."""
    if rate_per_s <= 0 or duration_s <= 0:
        return []
    rng = np.random.default_rng(seed)
    expected = rate_per_s * duration_s
    gaps = rng.exponential(1.0 / rate_per_s, size=int(expected + 6 * expected ** 0.5 + 16))
    times = start_s + np.cumsum(gaps)
    while times[-1] < start_s + duration_s:  # astronomically rare; keep it exact anyway
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate_per_s, size=len(times)))])
    return times[times < start_s + duration_s].tolist()


def constant_arrivals(rate_per_s: float, duration_s: float, start_s: float = 0.0) -> list[float]:
    """Evenly spaced: one every 1/rate seconds, the first at ``start_s``."""
    if rate_per_s <= 0 or duration_s <= 0:
        return []
    count = int(np.ceil(rate_per_s * duration_s - 1e-9))
    return (start_s + np.arange(count) / rate_per_s).tolist()


def step_arrivals(phases: Sequence[tuple[float, float]], seed: int = 0, poisson: bool = True) -> list[float]:
    """Consecutive phases of (duration_s, rate_per_s), Poisson (default) or constant."""
    times: list[float] = []
    start = 0.0
    for index, (duration_s, rate_per_s) in enumerate(phases):
        if poisson:
            times += poisson_arrivals(rate_per_s, duration_s, seed=seed + index, start_s=start)
        else:
            times += constant_arrivals(rate_per_s, duration_s, start_s=start)
        start += duration_s
    return times


def with_arrivals(requests: Iterable[SimRequest], times: Iterable[float]) -> Iterator[SimRequest]:
    """Each request with the next arrival time; ends with the shorter input."""
    for request, time_s in zip(requests, times):
        request.arrival_s = time_s
        yield request
