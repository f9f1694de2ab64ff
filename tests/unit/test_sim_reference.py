"""Simulator-only reference policies: the oracle and the two peer rules."""

import math

from kaon.routing.snapshot import ReplicaSnapshot, RoutingRequest
from kaon.sim import scenarios
from kaon.sim.cost_model import CostModel
from kaon.sim.reference import RayPrefixAffinity, RoutedPrefixTree, SGLangThreshold
from kaon.sim.workload import chain_hashes


def chain(n, start=0):
    return tuple(chain_hashes(list(range(start, start + 16 * n)), 16))


def snaps(loads):
    return [ReplicaSnapshot(f"r{i}", in_flight_requests=load) for i, load in enumerate(loads)]


def req(rid, hashes):
    return RoutingRequest(rid, hashes, 16 * len(hashes) + 1)


def test_oracle_reuses_prefixes_at_least_as_well_as_round_robin_under_cache_pressure():
    cost = CostModel.load("cpu-tiny")
    cost.kv_capacity_blocks = 60  # each replica holds ~3 of the 16 system prompts
    scenario = scenarios.Scenario(cost=cost, replicas=4, rate_per_s=30.0, duration_s=60.0, seed=5,
                                  workload_args={"num_groups": 16, "system_prompt_tokens": 1024, "output_tokens": 16})
    oracle = scenarios.simulate(scenario, "oracle")
    round_robin = scenarios.simulate(scenario, "round_robin")
    assert oracle.unfinished == round_robin.unfinished == 0
    assert oracle.hit_rate >= round_robin.hit_rate
    assert oracle.hit_rate > 0.5 > round_robin.hit_rate


def test_routed_prefix_tree_finds_the_longest_holders_and_forgets_replicas():
    tree = RoutedPrefixTree()
    tree.insert("a", chain(4))
    tree.insert("b", chain(2) + chain(2, start=1000))
    assert tree.longest_match(chain(4), {"a", "b"}) == (4, {"a"})
    assert tree.longest_match(chain(2) + chain(1, start=5000), {"a", "b"}) == (2, {"a", "b"})
    assert tree.longest_match(chain(4), {"b"}) == (2, {"b"})
    assert tree.blocks("a") == 4 and tree.blocks("b") == 4
    tree.remove_replica("a")
    assert tree.longest_match(chain(4), {"a", "b"}) == (2, {"b"})


def test_routed_prefix_tree_drops_least_recent_entries_past_its_bound():
    tree = RoutedPrefixTree(max_blocks_per_replica=10)
    tree.insert("a", chain(6))
    tree.insert("a", chain(6, start=1000))
    assert tree.blocks("a") <= 8
    assert tree.longest_match(chain(6, start=1000), {"a"})[0] == 6
    assert tree.longest_match(chain(6), {"a"})[0] < 6


def test_sglang_rule_prefers_the_match_unless_the_load_gap_is_large():
    policy = SGLangThreshold(seed=0)
    policy.on_routed(req("x", chain(8)), "r2")
    assert policy.rank(req("y", chain(8)), snaps([0, 0, 5]))[0] == ["r2"]
    # match below 30%: least loaded
    assert policy.rank(req("z", chain(2) + chain(8, start=999)), snaps([3, 0, 5]))[0] == ["r1"]
    # gap > 64 and > 1.5x: shortest queue even though r2 holds the prefix
    assert policy.rank(req("w", chain(8)), snaps([10, 3, 100]))[0] == ["r1"]
    tiers = policy.rank(req("v", chain(8)), snaps([1, 2, 3]))
    assert sorted(t[0] for t in tiers) == ["r0", "r1", "r2"]


def test_ray_rule_follows_the_longest_prefix_or_the_smallest_tree():
    policy = RayPrefixAffinity(seed=0)
    assert math.isinf(policy.imbalanced_threshold)  # Ray's default: never falls back on load
    policy.on_routed(req("x", chain(8)), "r0")
    assert policy.rank(req("y", chain(8)), snaps([50, 0, 0]))[0] == ["r0"]
    # no match: the replicas with the smallest trees (r1, r2), least queued first
    assert policy.rank(req("z", chain(8, start=999)), snaps([0, 4, 2]))[0] == ["r2"]
    strict = RayPrefixAffinity(seed=0, imbalanced_threshold=10)
    strict.on_routed(req("x", chain(8)), "r0")
    first = strict.rank(req("y", chain(8)), snaps([50, 0, 0]))[0]
    assert first != ["r0"]  # imbalanced: power of two among the others' loads
