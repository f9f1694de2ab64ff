"""The modelled prefix cache: hits on hand-built block chains, LRU eviction, pinning."""

from kaon.routing.snapshot import RoutingRequest
from kaon.sim.cost_model import CostModel
from kaon.sim.kv_cache import BlockTree, matched_run
from kaon.sim.replica import SimReplica
from kaon.sim.workload import SimRequest, chain_hashes

BLOCK = 4


def chain(*blocks):
    """Chained hashes of the given blocks (each block = its token ids)."""
    return tuple(chain_hashes([t for block in blocks for t in block], BLOCK))


A, B, C, D, E, F = ([i] * BLOCK for i in range(1, 7))


def request(rid, hashes, output=1, extra_tokens=0):
    return SimRequest(RoutingRequest(rid, hashes, len(hashes) * BLOCK + extra_tokens), output)


def replica(capacity):
    cost = CostModel("kv", prefill_s_per_token=1e-3, decode_base_s=0.01, decode_per_seq_s=0.0, max_batch=8,
                     kv_capacity_blocks=capacity, block_size_tokens=BLOCK, max_num_batched_tokens=None)
    return SimReplica("r", cost)


def serve(rep, sim, now):
    """Run one request alone to completion; return its ActiveRequest."""
    active = rep.enqueue(sim, now)
    while not rep.idle:
        end = rep.start_step(now)
        assert end is not None, "request cannot be admitted"
        rep.finish_step(end)
        now = end
    return active


def test_matched_run_uses_the_chain_property():
    run = chain(A, B, C)
    assert matched_run(run, chain(A, B, C, D), 0) == 3
    assert matched_run(run, chain(A, B, D), 0) == 2
    assert matched_run(run, chain(A), 0) == 1


def test_hits_are_the_longest_cached_prefix_chain():
    rep = replica(capacity=100)
    first = serve(rep, request("a", chain(A, B, C, D), extra_tokens=1), 0.0)
    assert first.cached_tokens == 0
    second = serve(rep, request("b", chain(A, B, E, F), extra_tokens=1), 1.0)
    assert second.cached_tokens == 2 * BLOCK  # A, B hit; E differs, so F cannot hit either
    third = serve(rep, request("c", chain(A, B, C, D), extra_tokens=1), 2.0)
    assert third.cached_tokens == 4 * BLOCK
    stats = rep.stats()
    assert stats.prefix_cache_hits_tokens == 6 * BLOCK
    assert stats.prefix_cache_queries_tokens == 3 * (4 * BLOCK + 1)


def test_a_fully_cached_prompt_still_computes_its_last_token():
    rep = replica(capacity=100)
    serve(rep, request("a", chain(A, B)), 0.0)
    again = serve(rep, request("b", chain(A, B)), 1.0)
    assert again.cached_tokens == BLOCK  # vLLM caps hits at (prompt - 1) // block_size blocks


def test_lru_evicts_the_oldest_chain_from_its_tail():
    rep = replica(capacity=10)
    serve(rep, request("a", chain(A, B, C, D), extra_tokens=1), 0.0)  # 4 hashed + 1 private block
    serve(rep, request("b", chain(A, B, E, F), extra_tokens=1), 1.0)  # A, B shared; E, F new
    serve(rep, request("c", chain(A, B, C, D), extra_tokens=1), 2.0)  # touches A, B, C, D
    assert rep.cache.blocks == 6
    # 6 new blocks + 1 private need 7; free 4 -> evict 3 unpinned: E, F (older), then D
    serve(rep, request("d", chain(*([[9 + i] * BLOCK for i in range(6)])), extra_tokens=1), 3.0)
    assert rep.cache.blocks == 9
    assert rep.cached_prefix_blocks(chain(A, B, E, F)) == 2
    assert rep.cached_prefix_blocks(chain(A, B, C, D)) == 3


def test_blocks_of_running_requests_are_pinned():
    rep = replica(capacity=10)
    long_runner = rep.enqueue(request("long", chain(A, B, C, D), output=20), 0.0)  # 4 + 5 private = 9
    end = rep.start_step(0.0)
    rep.finish_step(end)
    assert long_runner.first_token_s == end and rep.running == 1
    rep.enqueue(request("other", chain(E, F), output=1, extra_tokens=1), end)  # needs 3 blocks, 1 free
    end = rep.start_step(end)
    assert rep.running == 1 and len(rep.waiting) == 1  # not admitted: nothing evictable
    assert rep.stats().kv_cache_usage == 0.9
    while rep.running or rep.waiting:
        rep.finish_step(end)
        end = rep.start_step(end) or end
    assert rep.cached_prefix_blocks(chain(E, F)) == 2


def test_block_tree_counts_pinned_and_evictable_blocks():
    tree = BlockTree()
    hashes = chain(A, B, C)
    tree.acquire(hashes, 0)
    assert (tree.blocks, tree.pinned_blocks) == (3, 3)
    assert tree.match(chain(A, B, D)) == (2, 0)
    tree.release(hashes, 1.0)
    assert tree.evictable_blocks == 3 and tree.match(hashes) == (3, 3)
    assert tree.evict(2) == 2 and tree.match(hashes) == (1, 1)


def test_pending_tree_forgets_chains_nobody_waits_for():
    tree = BlockTree()
    tree.acquire(chain(A, B), 0)
    tree.acquire(chain(A, C), tree.match(chain(A, C))[0])
    tree.forget(chain(A, B))
    assert tree.blocks == 2 and tree.match(chain(A, B))[0] == 1
    tree.forget(chain(A, C))
    assert tree.blocks == 0 and tree.pinned_blocks == 0
