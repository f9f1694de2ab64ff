"""The simulator's cost model: step-time formula, JSON round trip, shipped calibrations."""

import pytest

from kaon.sim.cost_model import CostModel, shipped_calibrations


def model(**overrides):
    values = dict(name="t", prefill_s_per_token=1e-4, decode_base_s=0.01, decode_per_seq_s=0.001,
                  max_batch=8, kv_capacity_blocks=100, prefill_overhead_s=0.002, max_num_batched_tokens=512)
    return CostModel(**(values | overrides))


def test_step_time_is_linear_in_decodes_and_prefill_tokens():
    cost = model()
    assert cost.decode_step_s(4) == pytest.approx(0.014)
    assert cost.step_s(0, 4) == pytest.approx(0.014)
    assert cost.step_s(100, 4) == pytest.approx(0.014 + 0.002 + 0.01)
    assert cost.ttft_alone_s(100) == pytest.approx(0.01 + 0.002 + 0.01)
    assert cost.ttft_alone_s(1000) == pytest.approx(2 * 0.012 + 0.1)  # two chunks of <= 512


def test_blocks_for_rounds_up():
    cost = model(block_size_tokens=16)
    assert [cost.blocks_for(n) for n in (0, 1, 16, 17)] == [0, 1, 1, 2]


def test_json_round_trip_ignores_unknown_keys(tmp_path):
    cost = model(source="hand-made")
    path = cost.save(tmp_path / "m.json")
    assert CostModel.load(path) == cost
    data = cost.to_dict() | {"notes": "ignored"}
    assert CostModel.from_dict(data) == cost


@pytest.mark.parametrize("bad", [dict(max_batch=0), dict(decode_base_s=-1.0), dict(max_num_batched_tokens=8),
                                 dict(decode_base_s=0.0, decode_per_seq_s=0.0)])
def test_invalid_models_fail_at_construction(bad):
    with pytest.raises(ValueError):
        model(**bad)


def test_shipped_calibrations_load_by_name_and_state_their_source():
    names = shipped_calibrations()
    assert {"cpu-tiny", "gpu-llama3-8b-a100"} <= set(names)
    cpu, gpu = CostModel.load("cpu-tiny"), CostModel.load("gpu-llama3-8b-a100")
    assert cpu.block_size_tokens == 128 and gpu.block_size_tokens == 16
    assert "Measured" in cpu.source and "Estimate" in gpu.source
    assert 0 < cpu.decode_step_s(1) < 0.05 and 0 < gpu.decode_step_s(1) < 0.05
