"""Prompt tokens → chained KV-block hashes, the keys of the prefix index.

Like vLLM's prefix cache, only full blocks count and each block's hash covers its parent's,
so equal hashes mean equal prefixes. A tenant salt enters the first block (vLLM's
``cache_salt`` does the same), so tenants never share or probe each other's entries.
"""

from __future__ import annotations

import hashlib
from array import array


def block_hashes(token_ids: list[int], block_size: int, salt: str | None = None) -> tuple[int, ...]:
    parent = hashlib.blake2b((salt or "").encode(), digest_size=8).digest()
    hashes = []
    tokens = array("I", token_ids)
    for start in range(0, len(tokens) - block_size + 1, block_size):
        block = tokens[start : start + block_size].tobytes()
        parent = hashlib.blake2b(parent + block, digest_size=8).digest()
        hashes.append(int.from_bytes(parent, "little"))
    return tuple(hashes)
