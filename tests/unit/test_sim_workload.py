"""Simulator workloads: chained block hashes, sharing structure, arrivals."""

import itertools
from collections import Counter

import numpy as np
import pytest

from kaon.bench.workloads import zipf_weights
from kaon.sim import workload as wl


def test_chain_hashes_cover_full_blocks_and_chain_their_parents():
    tokens = list(range(40))
    hashes = wl.chain_hashes(tokens, 16)
    assert len(hashes) == 2  # the last 8 tokens are a partial block
    assert wl.chain_hashes(tokens[:32], 16) == hashes
    assert wl.chain_hashes(tokens[16:32], 16)[0] != hashes[1]  # same tokens, different parent
    assert hashes[1] == hash((hashes[0], tuple(tokens[16:32])))


def test_shared_prefix_requests_share_exactly_their_groups_system_prompt():
    requests = list(wl.shared_prefix(num_groups=4, prompts_per_group=3, system_prompt_tokens=100,
                                     question_tokens=20, output_tokens=7, block_size_tokens=16, seed=1,
                                     num_requests=12))
    assert len(requests) == 12
    assert {r.prompt_tokens for r in requests} == {120} and {r.output_tokens for r in requests} == {7}
    by_group = {}
    for r in requests:
        assert len(r.request.block_hashes) == 120 // 16
        by_group.setdefault(r.group_id, []).append(r.request.block_hashes)
    assert len(by_group) == 4 and all(len(v) == 3 for v in by_group.values())
    for chains in by_group.values():
        assert len({c[:6] for c in chains}) == 1  # 96 system tokens = 6 full blocks
        assert len({c[6] for c in chains}) == 3  # block 7 mixes in the question
    firsts = {chains[0][0] for chains in by_group.values()}
    assert len(firsts) == 4


def test_workloads_are_deterministic_per_seed_and_unbounded_without_a_count():
    def ids(seed):
        return [r.request.block_hashes for r in itertools.islice(wl.shared_prefix(num_groups=2, prompts_per_group=2,
                                                                                   seed=seed), 10)]
    assert ids(3) == ids(3) and ids(3) != ids(4)
    assert len(ids(3)) == 10  # more than groups x prompts: further rounds with new questions


def test_skewed_groups_follow_the_zipf_law_deterministically():
    def groups(skew, seed=0):
        return [r.group_id for r in wl.shared_prefix(num_groups=50, prompts_per_group=40, system_prompt_tokens=32,
                                                    question_tokens=16, seed=seed, num_requests=20_000,
                                                    group_skew=skew)]
    skewed = groups(1.1)
    assert skewed == groups(1.1) and skewed != groups(1.1, seed=1)
    shares = Counter(skewed)
    weights = zipf_weights(50, 1.1)
    for rank in (0, 1):
        assert shares[f"g{rank}"] / 20_000 == pytest.approx(weights[rank], rel=0.05)
    assert sum(shares[f"g{rank}"] for rank in range(10)) / 20_000 == pytest.approx(sum(weights[:10]), rel=0.05)
    assert set(Counter(groups(0.0)).values()) == {400}  # uniform: every group prompts_per_group times a round
    with pytest.raises(ValueError, match="skew"):
        groups(-1.0)


def test_multi_turn_rounds_extend_the_history_and_wait_for_the_previous_round():
    requests = list(wl.multi_turn(num_users=2, num_rounds=3, system_prompt_tokens=64, question_tokens=16,
                                  output_tokens=32, block_size_tokens=16, seed=0, num_requests=6))
    assert len(requests) == 6
    user0 = [r for r in requests if r.group_id == "c0u0"]
    assert [r.after_request_id for r in user0] == [None, user0[0].request_id, user0[1].request_id]
    assert [r.prompt_tokens for r in user0] == [80, 80 + 32 + 16, 80 + 2 * (32 + 16)]
    first, second = user0[0], user0[1]
    history = first.request.block_hashes + first.output_block_hashes
    assert second.request.block_hashes[:len(history)] == history
    other_user = next(r for r in requests if r.group_id == "c0u1")
    assert other_user.request.block_hashes[:4] == first.request.block_hashes[:4]  # shared system prompt


def test_random_lengths_stay_in_range_and_share_nothing():
    requests = list(wl.random_lengths((10, 50), (1, 5), block_size_tokens=8, seed=0, num_requests=50))
    assert all(10 <= r.prompt_tokens <= 50 and 1 <= r.output_tokens <= 5 for r in requests)
    firsts = [r.request.block_hashes[0] for r in requests]
    assert len(set(firsts)) == len(firsts)


def test_arrival_processes():
    times = wl.poisson_arrivals(50.0, 200.0, seed=2)
    assert len(times) == pytest.approx(10_000, rel=0.05)
    assert all(0 <= a < b < 200 for a, b in zip(times, times[1:]))
    assert np.std(np.diff(times)) == pytest.approx(1 / 50, rel=0.05)
    assert wl.constant_arrivals(4.0, 1.0) == [0.0, 0.25, 0.5, 0.75]
    steps = wl.step_arrivals([(10.0, 1.0), (10.0, 0.0), (10.0, 2.0)], poisson=False)
    assert len(steps) == 30 and not any(10 <= t < 20 for t in steps)
    paired = list(wl.with_arrivals(wl.shared_prefix(num_requests=5), [0.5, 1.5]))
    assert [r.arrival_s for r in paired] == [0.5, 1.5]
