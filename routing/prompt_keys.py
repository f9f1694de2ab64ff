"""Request body → RoutingRequest: tokenize as the replica will, then hash in KV blocks.

Chat messages go through the model's own chat template with the generation prompt, as
vLLM renders them; a completion prompt is encoded as is. A request's ``cache_salt`` (vLLM's
per-tenant cache isolation) enters the hashes, so tenants never match each other's blocks.
"""

from __future__ import annotations

from typing import Any

from kaon.config import ModelConfig
from kaon.routing.hashing import block_hashes
from kaon.routing.snapshot import RoutingRequest

CPU_BLOCK_SIZE_TOKENS = 128
"""vLLM's KV block size on CPU for standard attention (vllm/platforms/cpu.py)."""
GPU_BLOCK_SIZE_TOKENS = 16


def block_size_tokens(model: ModelConfig, device: str) -> int:
    """The routing key's block size: set explicitly, else the engine's, else vLLM's default."""
    default = CPU_BLOCK_SIZE_TOKENS if device == "cpu" else GPU_BLOCK_SIZE_TOKENS
    return model.routing.block_size_tokens or model.engine.block_size or default


class PromptKeys:
    def __init__(self, tokenizer: Any, block_size_tokens: int):
        self._tokenizer = tokenizer
        self._block_size_tokens = block_size_tokens

    def for_chat(self, request_id: str, messages: list[dict[str, Any]], salt: str | None = None) -> RoutingRequest:
        tokens = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        return self._keys(request_id, list(tokens), salt)

    def for_prompt(self, request_id: str, prompt: str | list[int], salt: str | None = None) -> RoutingRequest:
        tokens = prompt if isinstance(prompt, list) else self._tokenizer.encode(prompt, add_special_tokens=True)
        return self._keys(request_id, list(tokens), salt)

    def _keys(self, request_id: str, tokens: list[int], salt: str | None) -> RoutingRequest:
        return RoutingRequest(request_id, block_hashes(tokens, self._block_size_tokens, salt), len(tokens))
