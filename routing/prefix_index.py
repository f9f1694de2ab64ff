"""Which replica probably holds which KV blocks: the router's prefix index.

Two sources feed it, per replica:
- approximate entries, written when the router sends a request to a replica (its blocks are
  assumed cached there). Bounded: at most ``capacity_blocks`` entries per replica in LRU
  order, each dropped ``ttl_s`` after its last use, because the engine evicts too.
- exact entries, from the engine's own KV-cache events (stored, removed, all cleared). An
  exact store replaces the approximate entry for that block; approximate entries then only
  cover blocks the events have not reported yet, so their TTL can be short (``set_ttl``).

A chain's head is always touched after its tail (blocks are inserted last block first), so
LRU and TTL drop tails before heads, as vLLM's own free queue does, and a replica's entries
stay usable prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class PrefixIndex:
    def __init__(self, capacity_blocks: int = 100_000, ttl_s: float = 600.0):
        self._capacity_blocks = capacity_blocks
        self._default_ttl_s = ttl_s
        self._ttl_s: dict[str, float] = {}
        self._approximate: dict[str, dict[int, float]] = {}  # insertion order = LRU order
        self._exact: dict[str, set[int]] = {}
        self._holders: dict[int, set[str]] = {}
        self._expired_at_s = float("-inf")

    # --- approximate: what the router sent where --------------------------------------------

    def insert(self, replica_id: str, hashes: Sequence[int], now_s: float) -> None:
        """Mark a routed request's blocks as cached on a replica (most recently used)."""
        blocks = self._approximate.setdefault(replica_id, {})
        exact = self._exact.get(replica_id, ())
        holders = self._holders
        for block_hash in reversed(hashes):
            if block_hash in exact:
                continue
            if blocks.pop(block_hash, None) is None:
                holders.setdefault(block_hash, set()).add(replica_id)
            blocks[block_hash] = now_s
        while len(blocks) > self._capacity_blocks:
            self._drop_approximate(replica_id, next(iter(blocks)))

    def set_ttl(self, replica_id: str, ttl_s: float | None) -> None:
        """Lifetime of a replica's approximate entries; None restores the default."""
        if ttl_s is None:
            self._ttl_s.pop(replica_id, None)
        else:
            self._ttl_s[replica_id] = ttl_s

    # --- exact: what the engine reported ----------------------------------------------------

    def store_exact(self, replica_id: str, hashes: Iterable[int]) -> None:
        exact = self._exact.setdefault(replica_id, set())
        approximate = self._approximate.get(replica_id, {})
        holders = self._holders
        for block_hash in hashes:
            if block_hash in exact:
                continue
            exact.add(block_hash)
            if approximate.pop(block_hash, None) is None:
                holders.setdefault(block_hash, set()).add(replica_id)

    def remove_exact(self, replica_id: str, hashes: Iterable[int]) -> None:
        exact = self._exact.get(replica_id)
        if not exact:
            return
        approximate = self._approximate.get(replica_id, {})
        for block_hash in hashes:
            if block_hash in exact:
                exact.discard(block_hash)
                if block_hash not in approximate:
                    self._drop_holder(block_hash, replica_id)

    def holds_exact(self, replica_id: str, block_hash: int) -> bool:
        return block_hash in self._exact.get(replica_id, ())

    def demote_exact(self, replica_id: str, now_s: float) -> None:
        """Turn a replica's exact entries into approximate ones used at ``now_s`` (its
        events stopped: they may no longer hear of evictions)."""
        blocks = self._approximate.setdefault(replica_id, {})
        for block_hash in self._exact.pop(replica_id, ()):
            blocks.pop(block_hash, None)
            blocks[block_hash] = now_s
        while len(blocks) > self._capacity_blocks:
            self._drop_approximate(replica_id, next(iter(blocks)))

    def clear_exact(self, replica_id: str) -> None:
        approximate = self._approximate.get(replica_id, {})
        for block_hash in self._exact.pop(replica_id, ()):
            if block_hash not in approximate:
                self._drop_holder(block_hash, replica_id)

    # --- both -----------------------------------------------------------------------------------

    def clear(self, replica_id: str) -> None:
        """Forget a replica entirely (it was removed)."""
        self.clear_exact(replica_id)
        for block_hash in self._approximate.pop(replica_id, {}):
            self._drop_holder(block_hash, replica_id)
        self._ttl_s.pop(replica_id, None)

    def matched_blocks(self, hashes: Sequence[int], now_s: float) -> dict[str, int]:
        """Replica → how many leading blocks of ``hashes`` it holds; replicas holding none are absent.

        Expired approximate entries are dropped first, at most ten times per shortest TTL, so
        the walk itself is set operations only.
        """
        if now_s - self._expired_at_s >= min(self._ttl_s.values(), default=self._default_ttl_s) / 10:
            self.expire(now_s)
        matched: dict[str, int] = {}
        first = self._holders.get(hashes[0]) if hashes else None
        if not first:
            return matched
        holders = self._holders
        alive = set(first)
        for depth in range(1, len(hashes)):
            here = holders.get(hashes[depth])
            if here is None:
                matched.update(dict.fromkeys(alive, depth))
                return matched
            if not alive <= here:
                for replica_id in alive - here:
                    matched[replica_id] = depth
                alive &= here
                if not alive:
                    return matched
        matched.update(dict.fromkeys(alive, len(hashes)))
        return matched

    def expire(self, now_s: float) -> None:
        for replica_id, blocks in self._approximate.items():
            oldest_kept_s = now_s - self._ttl_s.get(replica_id, self._default_ttl_s)
            while blocks:
                block_hash = next(iter(blocks))
                if blocks[block_hash] >= oldest_kept_s:
                    break
                self._drop_approximate(replica_id, block_hash)
        self._expired_at_s = now_s

    def empty_replicas(self, replica_ids: Iterable[str]) -> list[str]:
        """Those of ``replica_ids`` the index believes hold no block (new, or unused for the TTL)."""
        approximate, exact = self._approximate, self._exact
        return [rid for rid in replica_ids if not approximate.get(rid) and not exact.get(rid)]

    def size_blocks(self, replica_id: str) -> int:
        """Distinct blocks the index believes the replica holds."""
        exact = self._exact.get(replica_id, set())
        return len(exact) + sum(1 for h in self._approximate.get(replica_id, ()) if h not in exact)

    def _drop_approximate(self, replica_id: str, block_hash: int) -> None:
        del self._approximate[replica_id][block_hash]
        if block_hash not in self._exact.get(replica_id, ()):
            self._drop_holder(block_hash, replica_id)

    def _drop_holder(self, block_hash: int, replica_id: str) -> None:
        holders = self._holders.get(block_hash)
        if holders is not None:
            holders.discard(replica_id)
            if not holders:
                del self._holders[block_hash]
