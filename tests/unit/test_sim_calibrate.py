"""calibrate() recovers known step-time parameters from synthetic bench records."""

import json

import numpy as np
import pytest

from kaon.sim.calibrate import calibrate, fit

PREFILL_S_PER_TOKEN = 6e-5
BASE_S = 0.005
PER_SEQ_S = 0.0003
OVERHEAD_S = 0.003


def synthetic_records(seed=0, noise=0.02, outliers=0):
    """Solo prefill probes, then batches of b identical requests sent together."""
    rng = np.random.default_rng(seed)
    records, t = [], 0.0

    def jitter(value):
        return value * (1 + noise * rng.standard_normal())

    for prompt in [16, 128, 256, 512, 1024, 1536, 2000] * 4:
        ttft = jitter(BASE_S + OVERHEAD_S + PREFILL_S_PER_TOKEN * prompt)
        records.append({"start_s": t, "ttft_s": ttft, "e2e_s": ttft, "prompt_tokens": prompt,
                        "output_tokens": 1, "itl_s": [], "error": None})
        t += ttft + 0.05
    for batch in (1, 2, 4, 8, 16, 32, 64):
        ttft, output = 0.02, 101
        e2e = ttft + (output - 1) * (BASE_S + PER_SEQ_S * batch)
        for _ in range(batch):
            records.append({"start_s": t, "ttft_s": ttft, "e2e_s": jitter(e2e), "prompt_tokens": 32,
                            "output_tokens": output, "itl_s": [], "error": None})
        t += e2e * 1.2 + 0.05
    for index in range(outliers):
        records[index]["ttft_s"] *= 10
    records.append({"start_s": t, "ttft_s": None, "e2e_s": None, "prompt_tokens": 5, "output_tokens": 0,
                    "error": "HTTP 500: boom"})
    return {"format": 1, "records": records}


def test_recovers_the_parameters_from_clean_records():
    model = calibrate(synthetic_records(noise=0.0), name="synthetic", max_batch=64, block_size_tokens=128)
    assert model.prefill_s_per_token == pytest.approx(PREFILL_S_PER_TOKEN, rel=1e-6)
    assert model.decode_base_s == pytest.approx(BASE_S, rel=1e-3)
    assert model.decode_per_seq_s == pytest.approx(PER_SEQ_S, rel=1e-3)
    assert model.prefill_overhead_s == pytest.approx(OVERHEAD_S, rel=1e-2)
    assert (model.name, model.max_batch, model.block_size_tokens) == ("synthetic", 64, 128)


def test_noise_and_outliers_still_give_close_figures():
    result = synthetic_records(seed=1, noise=0.03, outliers=3)
    found = fit(result)
    assert found.prefill.dropped >= 3 and found.prefill_solo_only
    model = calibrate(result)
    assert model.prefill_s_per_token == pytest.approx(PREFILL_S_PER_TOKEN, rel=0.1)
    assert model.decode_base_s == pytest.approx(BASE_S, rel=0.15)
    assert model.decode_per_seq_s == pytest.approx(PER_SEQ_S, rel=0.15)


def test_several_files_give_the_median_fit(tmp_path):
    paths = []
    for seed in range(3):
        path = tmp_path / f"run{seed}.json"
        path.write_text(json.dumps(synthetic_records(seed=seed)))
        paths.append(path)
    model = calibrate(*paths)
    assert model.decode_per_seq_s == pytest.approx(PER_SEQ_S, rel=0.15)
    assert "median of 3" in model.source


def test_too_few_records_fail_clearly():
    with pytest.raises(ValueError, match="at least 4"):
        calibrate({"records": synthetic_records()["records"][:2]})
