"""How long a modelled vLLM replica takes per engine step, calibrated per hardware + model.

One engine step (vLLM V1 scheduler) runs the prefill chunks of newly admitted or
partially prefilled requests and one decode token for every other running request. Its
duration is modelled as linear in the work:

    step_s = decode_base_s + decode_per_seq_s * decode_seqs
             + (prefill_overhead_s + prefill_s_per_token * prefill_tokens  if prefill_tokens > 0)

so a lone request's TTFT (prompt of n uncached tokens) is
``decode_base_s + prefill_overhead_s + prefill_s_per_token * n`` and the inter-token latency
at batch b is ``decode_base_s + decode_per_seq_s * b``. ``calibrate.py`` fits exactly these.

Block size: vLLM's GPU default is 16 tokens; vLLM's CPU platform
(``vllm/platforms/cpu.py``, ``check_and_update_config``) sets 128 when the user gives none
(16 only for the reference MLA kernel, 256 for DeepSeek-V4), and warns when it is not a
multiple of 32. Calibrations store the block size of the engine they describe.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

CALIBRATIONS_DIR = Path(__file__).parent / "calibrations"
VLLM_GPU_BLOCK_SIZE_TOKENS = 16
VLLM_CPU_BLOCK_SIZE_TOKENS = 128


@dataclass(slots=True)
class CostModel:
    """Timing and capacity of one replica (one vLLM engine).

    ``max_batch`` is vLLM's ``max_num_seqs``; ``max_num_batched_tokens`` the per-step token
    budget of chunked prefill (None: no chunking, a step prefills every admitted prompt
    whole); ``kv_capacity_blocks`` the KV-cache size in blocks of ``block_size_tokens``;
    ``cold_start_s`` the time from "start a replica" to "it takes requests". ``source``
    says where the figures come from.
    """

    name: str
    prefill_s_per_token: float
    decode_base_s: float
    decode_per_seq_s: float
    max_batch: int
    kv_capacity_blocks: int
    block_size_tokens: int = VLLM_GPU_BLOCK_SIZE_TOKENS
    prefill_overhead_s: float = 0.0
    max_num_batched_tokens: int | None = 8192
    cold_start_s: float = 60.0
    source: str = ""

    def __post_init__(self) -> None:
        if min(self.prefill_s_per_token, self.decode_base_s, self.decode_per_seq_s, self.prefill_overhead_s) < 0:
            raise ValueError(f"{self.name}: step-time coefficients must be >= 0")
        if self.decode_base_s + self.decode_per_seq_s <= 0:
            raise ValueError(f"{self.name}: a decode step must take some time")
        if self.max_batch < 1 or self.kv_capacity_blocks < 1 or self.block_size_tokens < 1:
            raise ValueError(f"{self.name}: max_batch, kv_capacity_blocks, block_size_tokens must be >= 1")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens <= self.max_batch:
            raise ValueError(f"{self.name}: max_num_batched_tokens must exceed max_batch")

    def decode_step_s(self, batch: int) -> float:
        """A step that decodes ``batch`` sequences and prefills nothing."""
        return self.decode_base_s + self.decode_per_seq_s * batch

    def step_s(self, prefill_tokens: int, decode_seqs: int) -> float:
        """A step with ``prefill_tokens`` uncached prompt tokens and ``decode_seqs`` decodes."""
        step = self.decode_base_s + self.decode_per_seq_s * decode_seqs
        if prefill_tokens > 0:
            step += self.prefill_overhead_s + self.prefill_s_per_token * prefill_tokens
        return step

    def ttft_alone_s(self, uncached_tokens: int) -> float:
        """TTFT of a request alone on an idle replica (one step when it fits the budget)."""
        budget = self.max_num_batched_tokens or max(uncached_tokens, 1)
        steps = max(1, -(-uncached_tokens // budget))
        return steps * (self.decode_base_s + self.prefill_overhead_s) + self.prefill_s_per_token * uncached_tokens

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` tokens (the last one may be partly filled)."""
        return -(-tokens // self.block_size_tokens)

    # --- JSON -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostModel:
        """Unknown keys are ignored (comments such as ``notes``); missing required ones raise."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path | str) -> CostModel:
        """A calibration file, or the name of a shipped one (``cpu-tiny``, ``gpu-llama3-8b-a100``)."""
        candidate = Path(path)
        if not candidate.exists() and (CALIBRATIONS_DIR / f"{path}.json").exists():
            candidate = CALIBRATIONS_DIR / f"{path}.json"
        return cls.from_dict(json.loads(candidate.read_text(encoding="utf-8")))


def shipped_calibrations() -> list[str]:
    """Names of the calibrations under ``sim/calibrations/``."""
    return sorted(p.stem for p in CALIBRATIONS_DIR.glob("*.json"))
