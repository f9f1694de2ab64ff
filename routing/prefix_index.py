"""Which replica probably holds which KV blocks: the router's prefix index.

Approximate entries are written when the router sends a request to a replica (its blocks
are assumed cached there). Memory is bounded: each replica keeps at most
``capacity_blocks`` entries in LRU order, and entries older than ``ttl_s`` are dropped,
because the engine evicts too.
"""

from __future__ import annotations

from collections.abc import Iterable


class PrefixIndex:
    def __init__(self, capacity_blocks: int = 100_000, ttl_s: float = 600.0):
        self._capacity_blocks = capacity_blocks
        self._ttl_s = ttl_s
        self._by_replica: dict[str, dict[int, float]] = {}  # insertion order = LRU order
        self._holders: dict[int, set[str]] = {}
        self._expired_at_s = float("-inf")

    def insert(self, replica_id: str, hashes: Iterable[int], now_s: float) -> None:
        """Mark blocks as cached on a replica (most recently used)."""
        blocks = self._by_replica.setdefault(replica_id, {})
        holders = self._holders
        for block_hash in hashes:
            if blocks.pop(block_hash, None) is None:
                holders.setdefault(block_hash, set()).add(replica_id)
            blocks[block_hash] = now_s
        while len(blocks) > self._capacity_blocks:
            oldest = next(iter(blocks))
            del blocks[oldest]
            self._drop_holder(oldest, replica_id)

    def remove(self, replica_id: str, hashes: Iterable[int]) -> None:
        blocks = self._by_replica.get(replica_id)
        if blocks is None:
            return
        for block_hash in hashes:
            if blocks.pop(block_hash, None) is not None:
                self._drop_holder(block_hash, replica_id)

    def clear(self, replica_id: str) -> None:
        """Forget a replica (removed, or its engine reported that it cleared its cache)."""
        for block_hash in self._by_replica.pop(replica_id, {}):
            self._drop_holder(block_hash, replica_id)

    def matched_blocks(self, hashes: tuple[int, ...], replica_ids: Iterable[str], now_s: float) -> dict[str, int]:
        """Leading blocks of ``hashes`` each replica holds (a prefix chain; stops at the first miss).

        Entries past their TTL are dropped first, at most once per ``ttl_s / 10``, so the walk
        itself is set intersections only.
        """
        if now_s - self._expired_at_s >= self._ttl_s / 10:
            self.expire(now_s)
        matched = dict.fromkeys(replica_ids, 0)
        alive = set(matched)
        for depth, block_hash in enumerate(hashes):
            still = alive.intersection(self._holders.get(block_hash, ()))
            for replica_id in alive - still:
                matched[replica_id] = depth
            alive = still
            if not alive:
                return matched
        for replica_id in alive:
            matched[replica_id] = len(hashes)
        return matched

    def expire(self, now_s: float) -> None:
        for replica_id in list(self._by_replica):
            self._expire(replica_id, now_s)
        self._expired_at_s = now_s

    def size_blocks(self, replica_id: str) -> int:
        return len(self._by_replica.get(replica_id, ()))

    def _expire(self, replica_id: str, now_s: float) -> None:
        blocks = self._by_replica[replica_id]
        while blocks:
            block_hash, used_s = next(iter(blocks.items()))
            if used_s >= now_s - self._ttl_s:
                return
            del blocks[block_hash]
            self._drop_holder(block_hash, replica_id)

    def _drop_holder(self, block_hash: int, replica_id: str) -> None:
        holders = self._holders.get(block_hash)
        if holders is not None:
            holders.discard(replica_id)
            if not holders:
                del self._holders[block_hash]
