"""A prefix cache of chained block hashes, kept as a radix tree so that a request costs a few
node visits rather than one dict operation per block.

Each node holds a run of consecutive block hashes that every request touching the node
touches whole, a reference count (running requests pinning it) and the time of its last
release. Since a request pins its whole path, a child never has more references than its
parent; unpinned blocks are evicted least recently released first, leaves before their
parents and a leaf from its tail, which is vLLM's order (LRU, a request's blocks freed tail
first). A chain is cached as a prefix: a block is present only if its parent is.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def matched_run(run: tuple[int, ...], hashes: Sequence[int], start: int) -> int:
    """How many leading blocks of ``run`` equal ``hashes[start:]``, given that the first does.

    Chained hashes make equality at one position imply equality of everything before it, so
    a full match is one comparison and a partial one a binary search.
    """
    limit = min(len(run), len(hashes) - start)
    if run[limit - 1] == hashes[start + limit - 1]:
        return limit
    low, high = 1, limit - 1
    while low < high:
        middle = (low + high + 1) // 2
        if run[middle - 1] == hashes[start + middle - 1]:
            low = middle
        else:
            high = middle - 1
    return low


class _Node:
    __slots__ = ("hashes", "children", "parent", "refs", "stamp")

    def __init__(self, hashes: tuple[int, ...], parent: _Node | None, refs: int, stamp: float):
        self.hashes = hashes
        self.children: dict[int, _Node] = {}
        self.parent = parent
        self.refs = refs
        self.stamp = stamp


class BlockTree:
    """Blocks keyed by chained hashes; ``blocks`` in total, ``pinned_blocks`` in use."""

    def __init__(self) -> None:
        self.root = _Node((), None, 1, 0.0)
        self.blocks = 0
        self.pinned_blocks = 0
        self._heap: list[tuple[float, int, _Node]] = []
        self._seq = 0

    @property
    def evictable_blocks(self) -> int:
        return self.blocks - self.pinned_blocks

    def match(self, hashes: tuple[int, ...]) -> tuple[int, int]:
        """(length of the longest cached prefix of ``hashes``, how many of those blocks are
        unpinned)."""
        node, i, n, unpinned = self.root, 0, len(hashes), 0
        while i < n:
            child = node.children.get(hashes[i])
            if child is None:
                break
            k = len(child.hashes)
            matched = matched_run(child.hashes, hashes, i)
            if child.refs == 0:
                unpinned += matched
            i += matched
            if matched < k:
                break
            node = child
        return i, unpinned

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node`` after ``at`` blocks; return the upper part (same refs and stamp)."""
        upper = _Node(node.hashes[:at], node.parent, node.refs, node.stamp)
        node.parent.children[upper.hashes[0]] = upper
        node.hashes = node.hashes[at:]
        node.parent = upper
        upper.children[node.hashes[0]] = node
        return upper

    def acquire(self, hashes: tuple[int, ...], matched: int, evict: int = 0) -> None:
        """Pin the first ``matched`` blocks (``match``'s first result), then evict ``evict``
        unpinned blocks to make room, then insert and pin the rest."""
        node, i = self.root, 0
        while i < matched:
            child = node.children[hashes[i]]
            if i + len(child.hashes) > matched:
                child = self._split(child, matched - i)
            if child.refs == 0:
                self.pinned_blocks += len(child.hashes)
            child.refs += 1
            i += len(child.hashes)
            node = child
        if evict:
            self.evict(evict)
        if matched < len(hashes):
            rest = tuple(hashes[matched:])
            leaf = _Node(rest, node, 1, 0.0)
            node.children[rest[0]] = leaf
            self.blocks += len(rest)
            self.pinned_blocks += len(rest)

    def release(self, hashes: tuple[int, ...], now_s: float, extra: tuple[int, ...] = (), room: int = 0) -> None:
        """Unpin a request's blocks (its whole chain is in the tree); then add ``extra``
        hashes after its chain, unpinned, as far as ``room`` free blocks allow."""
        node, i, n = self.root, 0, len(hashes)
        while i < n:
            node = node.children[hashes[i]]
            node.refs -= 1
            node.stamp = now_s
            if node.refs == 0:
                self.pinned_blocks -= len(node.hashes)
            i += len(node.hashes)
        extra = extra[:room]
        if extra and extra[0] not in node.children:
            leaf = _Node(extra, node, 0, now_s)
            node.children[extra[0]] = leaf
            self.blocks += len(extra)
            node = leaf
        if node.refs == 0 and not node.children:
            self._push(node)

    def forget(self, hashes: tuple[int, ...]) -> None:
        """Unpin a chain and drop the blocks nobody pins any more (for a record of pending
        work rather than a cache: nothing stays unpinned)."""
        node, i, n, detached = self.root, 0, len(hashes), False
        while i < n:
            child = node.children[hashes[i]]
            child.refs -= 1
            if child.refs == 0:  # and so will every node below it on this chain
                self.blocks -= len(child.hashes)
                self.pinned_blocks -= len(child.hashes)
                child.parent = None  # no cycles left behind
                if not detached:
                    del node.children[child.hashes[0]]
                    detached = True
            i += len(child.hashes)
            node = child

    def _push(self, node: _Node) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (node.stamp, self._seq, node))

    def evict(self, count: int) -> int:
        """Free up to ``count`` unpinned blocks, oldest leaves first; how many were freed."""
        freed, heap = 0, self._heap
        while freed < count and heap:
            stamp, _, node = heap[0]
            if node.parent is None or node.refs or node.children or node.stamp != stamp:
                heapq.heappop(heap)  # stale entry
                continue
            take = min(count - freed, len(node.hashes))
            freed += take
            self.blocks -= take
            if take < len(node.hashes):
                node.hashes = node.hashes[:-take]
                continue
            heapq.heappop(heap)
            parent = node.parent
            del parent.children[node.hashes[0]]
            node.parent = None
            if parent is not self.root and parent.refs == 0 and not parent.children:
                self._push(parent)
        return freed
