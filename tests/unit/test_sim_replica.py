"""The modelled replica's continuous batching: step timing, chunked prefill, max batch."""

import pytest

from kaon.routing.snapshot import RoutingRequest
from kaon.sim.cost_model import CostModel
from kaon.sim.replica import SimReplica
from kaon.sim.workload import SimRequest

STEP = 0.01


def cost(**overrides):
    values = dict(name="r", prefill_s_per_token=0.0, decode_base_s=STEP, decode_per_seq_s=0.0, max_batch=8,
                  kv_capacity_blocks=10_000, block_size_tokens=16, max_num_batched_tokens=None)
    return CostModel(**(values | overrides))


def req(rid, prompt=32, output=10):
    return SimRequest(RoutingRequest(rid, (), prompt), output)


def drive(rep, arrivals):
    """Minimal event loop over one replica: arrivals = [(time, SimRequest)] in order."""
    pending = list(arrivals)
    actives, now, end = {}, 0.0, None
    while pending or not rep.idle:
        if pending and (end is None or pending[0][0] < end):
            now, sim = pending.pop(0)
            actives[sim.request_id] = rep.enqueue(sim, now)
            if not rep.busy:
                end = rep.start_step(now)
            elif len(rep.waiting) == 1:
                end = rep.interrupt(now) or end
            continue
        now = end
        rep.finish_step(now)
        end = rep.start_step(now)
    return actives


def test_lone_request_timing():
    a = drive(SimReplica("r", cost(prefill_s_per_token=1e-4)), [(0.0, req("a", prompt=100, output=5))])["a"]
    assert a.first_token_s == pytest.approx(STEP + 0.01)  # one step: base + 100 tokens
    assert a.finished_s == pytest.approx(a.first_token_s + 4 * STEP)


def test_an_arrival_joins_a_running_batch_at_the_next_step_boundary():
    acts = drive(SimReplica("r", cost()), [(0.0, req("a", output=100)), (0.055, req("b", output=10))])
    assert acts["b"].admitted_s == pytest.approx(0.06)
    assert acts["b"].first_token_s == pytest.approx(0.07)
    assert acts["a"].finished_s == pytest.approx(1.0)  # constant step time: unaffected
    assert acts["b"].finished_s == pytest.approx(0.16)


def test_decode_steps_slow_down_with_the_batch():
    acts = drive(SimReplica("r", cost(decode_per_seq_s=0.001)), [(0.0, req("a", output=11)), (0.0, req("b", output=11))])
    # a's prefill step is already running when b comes: b prefills in the next step, beside
    # a's first decode (one sequence), then both decode together for a's last 9 tokens
    assert acts["b"].first_token_s == pytest.approx(STEP + (STEP + 0.001))
    assert acts["a"].finished_s == pytest.approx(STEP + (STEP + 0.001) + 9 * (STEP + 0.002))


def test_max_batch_queues_the_rest():
    acts = drive(SimReplica("r", cost(max_batch=1)), [(0.0, req("a", output=3)), (0.0, req("b", output=3))])
    assert acts["b"].admitted_s == pytest.approx(acts["a"].finished_s)


def test_chunked_prefill_spreads_a_long_prompt_over_steps():
    model = cost(prefill_s_per_token=1e-4, max_num_batched_tokens=1000)
    a = drive(SimReplica("r", model), [(0.0, req("a", prompt=2500, output=1))])["a"]
    assert a.first_token_s == pytest.approx(3 * STEP + 2500 * 1e-4)


def test_stats_report_running_waiting_and_usage():
    rep = SimReplica("r", cost(max_batch=1, kv_capacity_blocks=10))
    rep.enqueue(req("a", prompt=32, output=16), 0.0)
    rep.enqueue(req("b"), 0.0)
    rep.start_step(0.0)
    stats = rep.stats()
    assert (stats.running_requests, stats.waiting_requests) == (1, 1)
    assert stats.kv_cache_usage == pytest.approx(0.3)  # 48 tokens -> 3 blocks of 16
