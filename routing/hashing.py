"""Prompt tokens → chained KV-block hashes, the keys of the prefix index.

Like vLLM's prefix cache, only full blocks count and each block's hash covers its parent's,
so equal hashes mean equal prefixes. A tenant salt enters the first block (vLLM's
``cache_salt`` does the same), so tenants never share or probe each other's entries.
A hash is the int of an 8-byte digest; ``root_digest`` and ``next_digest`` are the chain's
two steps, shared with the translation of the engine's own KV events.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence


def root_digest(salt: str | None) -> bytes:
    return hashlib.blake2b((salt or "").encode(), digest_size=8).digest()


def next_digest(parent: bytes, block_token_ids: Sequence[int]) -> bytes:
    return hashlib.blake2b(parent + array("I", block_token_ids).tobytes(), digest_size=8).digest()


def as_hash(digest: bytes) -> int:
    return int.from_bytes(digest, "little")


def block_hashes(token_ids: Sequence[int], block_size: int, salt: str | None = None) -> tuple[int, ...]:
    parent = root_digest(salt)
    hashes = []
    tokens = array("I", token_ids)
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hashlib.blake2b(parent + tokens[start : start + block_size].tobytes(), digest_size=8).digest()
        hashes.append(as_hash(parent))
    return tuple(hashes)
