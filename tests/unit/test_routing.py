"""Routing policies on hand-built snapshots: each guard against the peers' failure modes."""

from collections import Counter

import pytest

from kaon.routing.baselines import PowerOfTwo, RoundRobin
from kaon.routing.hashing import block_hashes
from kaon.routing.prefix_index import PrefixIndex
from kaon.routing.prefix_load import PrefixLoad, PrefixLoadSettings
from kaon.routing.registry import make_policy
from kaon.routing.snapshot import ReplicaSnapshot, RoutingRequest


class Clock:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self):
        return self.now_s


def request(request_id, tokens, salt=None):
    return RoutingRequest(request_id, block_hashes(tokens, 16, salt), len(tokens))


def replicas(*loads):
    return [ReplicaSnapshot(f"r{i}", in_flight_requests=n) for i, n in enumerate(loads)]


def route(policy, req, snapshot):
    chosen = policy.rank(req, snapshot)[0][0]
    policy.on_routed(req, chosen)
    return chosen


def test_hashes_chain_and_salt_separates_tenants():
    a = block_hashes(list(range(64)), 16)
    b = block_hashes(list(range(48)) + [999] * 16, 16)
    assert len(a) == 4 and a[:3] == b[:3] and a[3] != b[3]
    assert block_hashes(list(range(20)), 16) == a[:1]  # partial block ignored
    assert set(block_hashes(list(range(64)), 16, salt="tenant-a")).isdisjoint(a)


def test_prefix_match_goes_to_the_replica_holding_it():
    clock = Clock()
    policy = PrefixLoad(seed=1, clock=clock)
    doc = list(range(2000))
    first = route(policy, request("a", doc + [1, 2]), replicas(0, 0, 0))
    # a fresh, idle cluster: the others hold nothing, yet the prompt goes back where it is
    assert route(policy, request("again", doc + [1, 2]), replicas(0, 0, 0)) == first
    clock.now_s = 30.0
    for i in range(5):
        assert route(policy, request(f"q{i}", doc + [i] * 20), replicas(0, 0, 0)) == first


def test_cold_requests_go_to_the_least_loaded_replica():
    policy = PrefixLoad(seed=1, clock=Clock())
    assert policy.rank(request("a", list(range(300))), replicas(3, 0, 2))[0] == ["r1"]


def test_ties_are_broken_at_random():
    policy = PrefixLoad(seed=3, clock=Clock())
    picks = Counter(policy.rank(request(f"x{i}", [i] * 64), replicas(0, 0, 0, 0))[0][0] for i in range(400))
    assert set(picks) == {"r0", "r1", "r2", "r3"}
    assert min(picks.values()) > 60


def test_hot_shared_prefix_spills_instead_of_piling_onto_one_replica():
    clock = Clock()
    policy = PrefixLoad(seed=1, clock=clock, settings=PrefixLoadSettings(spill_slack_requests=2))
    system_prompt = list(range(1024))
    for k in range(3):
        route(policy, request(f"warm{k}", [5000 + k] * 320), [ReplicaSnapshot(f"r{k}")])  # none is cold
    clock.now_s = 10.0
    in_flight = Counter()
    for i in range(12):
        snapshot = [ReplicaSnapshot(f"r{k}", in_flight_requests=in_flight[f"r{k}"]) for k in range(3)]
        in_flight[route(policy, request(f"u{i}", system_prompt + [i] * 32), snapshot)] += 1
        clock.now_s += 0.1
    assert len(in_flight) == 3, in_flight
    assert max(in_flight.values()) - min(in_flight.values()) <= 3


def test_a_cold_replica_is_warmed_with_a_shared_prefix_instead_of_left_idle():
    clock = Clock()
    policy = PrefixLoad(seed=1, clock=clock)
    system_prompt, other = list(range(1024)), list(range(5000, 6024))
    route(policy, request("a", system_prompt + [1] * 32), replicas(0, 0)[:1])  # r0 holds the system prompt
    route(policy, request("b", other), [ReplicaSnapshot("r1")])  # r1 holds something else
    clock.now_s = 60.0

    def loads(r0, r1, r2):
        return [ReplicaSnapshot("r0", in_flight_requests=r0), ReplicaSnapshot("r1", in_flight_requests=r1),
                ReplicaSnapshot("r2", in_flight_requests=r2)]

    # r2 is new: costed as if it held the system prompt, it wins on load; r1 (idle, but warm
    # with another prefix) would have to prefill it all
    assert route(policy, request("c", system_prompt + [2] * 32), loads(4, 0, 1)) == "r2"
    clock.now_s = 70.0
    # now warm, r2 is no longer assumed to hold what it was not sent: r1 keeps its own prefix
    assert policy.rank(request("d", other + [3] * 32), loads(4, 3, 1))[0] == ["r1"]
    assert policy.rank(request("e", list(range(7000, 8024))), loads(4, 3, 1))[0] == ["r2"]  # cached nowhere
    assert policy.index.empty_replicas(["r0", "r1", "r2"]) == []
    policy.index.expire(70.0 + 601.0)  # unused for the TTL: cold again
    assert policy.index.empty_replicas(["r0", "r1", "r2"]) == ["r0", "r1", "r2"]


def test_imbalance_beats_a_small_prefix_gain_but_not_a_large_one():
    clock = Clock()
    policy = PrefixLoad(seed=1, clock=clock)
    document = list(range(2000))
    owner = route(policy, request("seed", document), replicas(0, 0))
    route(policy, request("other", list(range(3000, 3100))), [r for r in replicas(0, 0) if r.replica_id != owner])
    clock.now_s = 60.0  # the prefills are long done; both replicas are warm

    def busy_owner(in_flight):
        return [ReplicaSnapshot(rid, in_flight_requests=in_flight if rid == owner else 0) for rid in ("r0", "r1")]

    small_gain = request("small", document[:64] + [9] * 200)
    assert policy.rank(small_gain, busy_owner(6))[0][0] != owner
    large_gain = request("large", document + [9] * 20)
    assert policy.rank(large_gain, busy_owner(6))[0][0] == owner


def test_a_request_routed_behind_another_waits_for_its_engine_step():
    """...while it is in flight; once the router sees nothing in flight there, the step is done."""
    clock = Clock()
    policy = PrefixLoad(seed=1, clock=clock, settings=PrefixLoadSettings(step_overhead_tokens=100))
    document = list(range(320))
    for rid in ("r0", "r1"):
        route(policy, request(f"warm-{rid}", document), [ReplicaSnapshot(rid)])
    clock.now_s = 60.0
    first = route(policy, request("a", document), replicas(0, 0))  # all cached: only the step is left
    other = "r1" if first == "r0" else "r0"
    # the other replica is busier by one request (32 tokens), but free of the step just sent
    behind = [ReplicaSnapshot(first, in_flight_requests=1), ReplicaSnapshot(other, in_flight_requests=2)]
    assert route(policy, request("b", document), behind) == other


def test_full_replica_is_ranked_last():
    policy = PrefixLoad(seed=1, clock=Clock())
    full = [ReplicaSnapshot("r0", in_flight_requests=4, max_ongoing_requests=4), ReplicaSnapshot("r1", in_flight_requests=5)]
    assert policy.rank(request("a", [1] * 64), full)[0] == ["r1"]


def test_index_evicts_lru_beyond_capacity_and_after_ttl():
    index = PrefixIndex(capacity_blocks=4, ttl_s=10)
    index.insert("r0", [1, 2, 3], now_s=0)
    index.insert("r0", [4, 5], now_s=1)  # block 3, the first chain's tail, is the least recently used
    assert index.size_blocks("r0") == 4
    assert index.matched_blocks((1, 2, 3), now_s=2) == {"r0": 2}
    assert index.matched_blocks((4, 5), now_s=20) == {}  # expired


def test_exact_entries_outlive_the_ttl_and_follow_the_engine():
    index = PrefixIndex(capacity_blocks=100, ttl_s=10)
    index.insert("r0", [1, 2, 3], now_s=0)
    index.store_exact("r0", [1, 2])  # the engine reported the first two blocks
    index.insert("r1", [1], now_s=0)
    assert index.matched_blocks((1, 2, 3), now_s=5) == {"r0": 3, "r1": 1}
    assert index.matched_blocks((1, 2, 3), now_s=30) == {"r0": 2}  # approximate 3 and r1's 1 expired
    index.remove_exact("r0", [2])
    assert index.matched_blocks((1, 2, 3), now_s=30) == {"r0": 1}
    index.clear_exact("r0")
    assert index.matched_blocks((1,), now_s=30) == {}
    assert index.size_blocks("r0") == 0


def test_short_ttl_for_a_replica_with_live_events():
    index = PrefixIndex(capacity_blocks=100, ttl_s=600)
    index.set_ttl("r0", 2.0)
    index.insert("r0", [1], now_s=0)
    index.insert("r1", [1], now_s=0)
    assert index.matched_blocks((1,), now_s=5) == {"r1": 1}
    index.set_ttl("r0", None)
    index.insert("r0", [1], now_s=5)
    assert index.matched_blocks((1,), now_s=60) == {"r0": 1, "r1": 1}


def test_removed_replica_is_forgotten():
    clock = Clock()
    policy = PrefixLoad(seed=1, clock=clock)
    doc = list(range(512))
    owner = route(policy, request("a", doc), replicas(0, 0))
    policy.on_replica_removed(owner)
    assert policy.index.size_blocks(owner) == 0
    survivors = [r for r in replicas(0, 0) if r.replica_id != owner]
    assert policy.rank(request("b", doc), survivors)[0][0] != owner


def test_round_robin_cycles_and_power_of_two_prefers_the_lighter():
    rr = RoundRobin()
    assert [rr.rank(request(str(i), []), replicas(0, 0, 0))[0][0] for i in range(4)] == ["r0", "r1", "r2", "r0"]
    p2 = PowerOfTwo(seed=0)
    assert p2.rank(request("a", []), replicas(5, 1))[0] == ["r1"]


def test_registry_knows_every_policy_and_refuses_others():
    for name in ("prefix_load", "round_robin", "power_of_two"):
        assert make_policy(name).name == name
    with pytest.raises(ValueError, match="unknown routing policy"):
        make_policy("random_walk")


def test_prompt_keys_follow_the_chat_template(tmp_path):
    from transformers import AutoTokenizer

    from kaon.routing.prompt_keys import PromptKeys
    from kaon.tiny_model import ensure_tiny_model

    keys = PromptKeys(AutoTokenizer.from_pretrained(ensure_tiny_model(tmp_path / "m")), block_size_tokens=16)
    system = {"role": "system", "content": "You are a careful assistant. " * 20}
    a = keys.for_chat("a", [system, {"role": "user", "content": "first question"}])
    b = keys.for_chat("b", [system, {"role": "user", "content": "second question"}])
    shared = next(i for i, (x, y) in enumerate(zip(a.block_hashes, b.block_hashes)) if x != y)
    assert shared >= 5 and a.prompt_tokens > 100
    tokens = keys.for_prompt("c", list(range(40)))
    assert (tokens.prompt_tokens, len(tokens.block_hashes)) == (40, 2)
    assert set(keys.for_chat("d", [system], salt="tenant").block_hashes).isdisjoint(a.block_hashes)


def test_no_backlog_is_charged_where_nothing_is_in_flight():
    clock = Clock()
    policy = PrefixLoad(seed=1, clock=clock, settings=PrefixLoadSettings(prefill_tokens_per_s=10))
    document = list(range(320))
    first = route(policy, request("a", document), replicas(0, 0))  # a 32-second backlog by the model
    # it finished at once (the model's rate was pessimistic): the prompt goes back to its cache
    assert route(policy, request("b", document), replicas(0, 0)) == first
