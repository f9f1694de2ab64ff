"""The precise prefix index: vLLM's KV-cache events, per replica, into kaon's block hashes.

vLLM publishes what its prefix cache stores and evicts, keyed by its own block hashes (which
depend on its hash algorithm and seed). kaon re-hashes each stored block from the tokens the
event carries, chained from its parent, so both sides agree without sharing vLLM's hash
settings; the map from vLLM's hash to kaon's is kept per replica to resolve parents and
removals.

A replica's events are trusted ("live") from its first batch on; its approximate entries
then only bridge the time until a routed request's blocks are reported (``gap_ttl_s``). The
replica falls back to the approximate index, with its exact entries demoted to approximate
ones, when its events stop: a sequence gap, a block size that differs from the router's, or
a routed request that had to store a new block with no batch within ``silence_timeout_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from kaon.routing.hashing import as_hash, next_digest, root_digest
from kaon.routing.prefix_index import PrefixIndex


@dataclass(slots=True, frozen=True)
class BlocksStored:
    """Full blocks the engine cached: ``token_ids`` holds ``block_size_tokens`` per block."""

    engine_hashes: Sequence[Hashable]
    parent_engine_hash: Hashable | None
    token_ids: Sequence[int]
    block_size_tokens: int
    salt: str | None = None


@dataclass(slots=True, frozen=True)
class BlocksRemoved:
    engine_hashes: Sequence[Hashable]


@dataclass(slots=True, frozen=True)
class CacheCleared:
    pass


KVEvent = BlocksStored | BlocksRemoved | CacheCleared


class EngineHashes:
    """One replica's map from the engine's block hashes to kaon's chained digests."""

    def __init__(self) -> None:
        self._digests: dict[Hashable, bytes] = {}

    def stored(self, event: BlocksStored) -> list[int]:
        """kaon's hashes of the stored blocks; none when the parent was never reported
        (the chain cannot be rebuilt, so those blocks stay approximate)."""
        if event.parent_engine_hash is None:
            parent = root_digest(event.salt)
        else:
            parent = self._digests.get(event.parent_engine_hash)
            if parent is None:
                return []
        size = event.block_size_tokens
        hashes = []
        for i, engine_hash in enumerate(event.engine_hashes):
            tokens = event.token_ids[i * size : (i + 1) * size]
            if len(tokens) < size:
                break
            parent = next_digest(parent, tokens)
            self._digests[engine_hash] = parent
            hashes.append(as_hash(parent))
        return hashes

    def removed(self, event: BlocksRemoved) -> list[int]:
        digests = (self._digests.pop(h, None) for h in event.engine_hashes)
        return [as_hash(d) for d in digests if d is not None]

    def clear(self) -> None:
        self._digests.clear()


@dataclass(slots=True)
class _Feed:
    hashes: EngineHashes
    next_seq: int | None = None
    live: bool = False
    incompatible: bool = False
    waiting_since_s: float | None = None
    """When a routed request first needed a stored-block event that has not come yet."""


class EventTracker:
    """Applies replicas' KV events to a prefix index and decides when to stop trusting them.

    ``on_fallback(replica_id, reason)`` is told each time a replica falls back.
    """

    def __init__(
        self, index: PrefixIndex, block_size_tokens: int, gap_ttl_s: float = 30.0, silence_timeout_s: float = 30.0,
        on_fallback: Callable[[str, str], None] = lambda replica_id, reason: None,
    ):
        self._index = index
        self._block_size_tokens = block_size_tokens
        self._gap_ttl_s = gap_ttl_s
        self._silence_timeout_s = silence_timeout_s
        self._on_fallback = on_fallback
        self._feeds: dict[str, _Feed] = {}

    def is_live(self, replica_id: str) -> bool:
        feed = self._feeds.get(replica_id)
        return feed is not None and feed.live

    def on_batch(self, replica_id: str, seq: int, events: Sequence[KVEvent], now_s: float) -> None:
        feed = self._feeds.setdefault(replica_id, _Feed(EngineHashes()))
        if feed.incompatible:
            return
        if feed.next_seq is not None and seq != feed.next_seq:
            self._fall_back(replica_id, feed, "sequence_gap", now_s)
        feed.next_seq = seq + 1
        feed.waiting_since_s = None
        for event in events:
            if isinstance(event, BlocksStored) and event.block_size_tokens != self._block_size_tokens:
                self._fall_back(replica_id, feed, "block_size_mismatch", now_s)
                feed.incompatible = True
                return
            self._apply(replica_id, feed.hashes, event)
        if not feed.live:
            feed.live = True
            self._index.set_ttl(replica_id, self._gap_ttl_s)

    def on_routed(self, replica_id: str, block_hashes: Sequence[int], now_s: float) -> None:
        """A request went to the replica; if its last full block is not known to be cached
        there, the engine must report storing it."""
        feed = self._feeds.get(replica_id)
        if feed is None or not feed.live or not block_hashes or feed.waiting_since_s is not None:
            return
        if not self._index.holds_exact(replica_id, block_hashes[-1]):
            feed.waiting_since_s = now_s

    def check(self, now_s: float) -> None:
        """Fall back for every live replica whose expected events did not come in time."""
        for replica_id, feed in self._feeds.items():
            if feed.live and feed.waiting_since_s is not None and now_s - feed.waiting_since_s > self._silence_timeout_s:
                self._fall_back(replica_id, feed, "silent", now_s)

    def forget(self, replica_id: str) -> None:
        self._feeds.pop(replica_id, None)

    def _apply(self, replica_id: str, hashes: EngineHashes, event: KVEvent) -> None:
        if isinstance(event, BlocksStored):
            self._index.store_exact(replica_id, hashes.stored(event))
        elif isinstance(event, BlocksRemoved):
            self._index.remove_exact(replica_id, hashes.removed(event))
        else:
            hashes.clear()
            self._index.clear_exact(replica_id)

    def _fall_back(self, replica_id: str, feed: _Feed, reason: str, now_s: float) -> None:
        """Exact entries may now miss removals: keep them as approximate ones that age out."""
        self._index.demote_exact(replica_id, now_s)
        self._index.set_ttl(replica_id, None)
        feed.hashes.clear()
        feed.live = False
        feed.waiting_since_s = None
        self._on_fallback(replica_id, reason)
