"""Deterministic generator of random-weight Llama checkpoints in Hugging Face format.

No model hub is reachable where kaon is built and tested, so tests and benchmarks serve a
model generated locally: a byte-level BPE tokenizer trained on ``kaon/data/corpus.txt``
and a ``LlamaForCausalLM`` with seeded random weights. The output is meaningless text,
but every byte on disk is a pure function of (size, seed, GENERATOR_VERSION) on a
given torch/transformers/tokenizers install, and vLLM loads it like any real Llama.
"""

from __future__ import annotations

import errno
import json
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Mapping

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SizeName = Literal["tiny", "bench"]

# Bump whenever a code change alters the generated files, so `ensure_tiny_model`
# replaces models written by older code.
GENERATOR_VERSION = 1
STAMP_FILE = "kaon_tiny_model.json"
CORPUS_PATH = Path(__file__).parent / "data" / "corpus.txt"

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
# Order fixes the ids: the BPE trainer assigns special tokens ids 0..4 in this order.
SPECIAL_TOKENS = (BOS, EOS, IM_START, IM_END, PAD)

# ChatML. Content may be a string or a list of OpenAI-style parts (vLLM passes either,
# depending on the content format it detects); non-text parts and None are dropped.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}"
    "{{- message['content'] }}"
    "{%- elif message['content'] is iterable %}"
    "{%- for part in message['content'] if part['type'] == 'text' %}"
    "{{- part['text'] }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


@dataclass(frozen=True, slots=True)
class TinyModelSpec:
    """Architecture of one generated model; ``vocab_size`` is also the BPE training target."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    max_position_tokens: int
    dtype: Literal["float32", "bfloat16"]

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(f"heads must divide hidden_size and kv heads must divide heads: {self}")

    @property
    def head_dim(self) -> int:
        """vLLM's CPU attention only accepts some head sizes (e.g. 32, 64, 128)."""
        return self.hidden_size // self.num_heads


SIZES: Mapping[str, TinyModelSpec] = MappingProxyType(
    {
        # ~0.8M params, ~3 MB: negligible load time next to vLLM start-up; for functional tests.
        "tiny": TinyModelSpec(
            hidden_size=128,
            intermediate_size=256,
            num_layers=2,
            num_heads=2,
            num_kv_heads=1,
            vocab_size=2048,
            max_position_tokens=4096,
            dtype="float32",
        ),
        # ~96M params: a 2k-token prefill takes clearly measurable CPU time; for benchmarks.
        # bfloat16 halves the disk size and upcasts exactly. vLLM's dtype="auto" serves even
        # float32 checkpoints as bfloat16, whose prefill is ~5x slower than dtype="float32"
        # on CPUs without AVX512-BF16/AMX, so the serving config must choose explicitly.
        "bench": TinyModelSpec(
            hidden_size=768,
            intermediate_size=2560,
            num_layers=12,
            num_heads=12,
            num_kv_heads=4,
            vocab_size=4096,
            max_position_tokens=8192,
            dtype="bfloat16",
        ),
    }
)


def generate_tiny_model(out_dir: Path | str, size: SizeName = "tiny", seed: int = 0) -> Path:
    """Write a fresh model to ``out_dir``, replacing whatever is there, and return the path.

    The model is built in a temporary sibling directory and renamed into place, so
    ``out_dir`` never holds a partial model, even after Ctrl-C or a concurrent writer.
    """
    return _build_and_publish(Path(out_dir), size, seed, replace=True)


def ensure_tiny_model(out_dir: Path | str, size: SizeName = "tiny", seed: int = 0) -> Path:
    """Return ``out_dir``, generating the model only if it does not already hold one
    generated with the same size, seed, spec and GENERATOR_VERSION."""
    out_dir = Path(out_dir)
    if _read_stamp(out_dir) == _stamp(size, seed):
        return out_dir
    return _build_and_publish(out_dir, size, seed, replace=False)


def _stamp(size: SizeName, seed: int) -> dict[str, object]:
    """Identity of a generated model; includes the spec so editing SIZES invalidates it."""
    spec = asdict(SIZES[size])
    return {"generator_version": GENERATOR_VERSION, "size": size, "seed": seed, "spec": spec}


def _read_stamp(model_dir: Path) -> dict[str, object] | None:
    """The stamp is written last and directories only appear by rename, so a readable
    stamp means the model beside it is complete."""
    try:
        return json.loads((model_dir / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _build_and_publish(out_dir: Path, size: SizeName, seed: int, *, replace: bool) -> Path:
    spec, stamp = SIZES[size], _stamp(size, seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700; other users (e.g. in containers) must read it
    try:
        _write_model(staging, spec, seed)
        (staging / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        _publish(staging, out_dir, stamp, replace=replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # no-op once renamed into place
    return out_dir


def _publish(staging: Path, out_dir: Path, stamp: dict[str, object], *, replace: bool) -> None:
    """Move ``staging`` to ``out_dir`` with renames only.

    Unless ``replace``, a complete model with our stamp already at ``out_dir`` (a racing
    process won) is kept: generation is deterministic, so it equals ours, and keeping it
    avoids pulling files from under a reader. Anything else there is moved aside, then deleted.
    """
    while replace or _read_stamp(out_dir) != stamp:
        try:
            staging.rename(out_dir)
            return
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        _discard(out_dir)
        replace = False


def _discard(path: Path) -> None:
    """Rename first so ``path`` is free at once even if deleting a large model is slow."""
    trash = path.with_name(f".{path.name}.trash-{uuid.uuid4().hex}")
    try:
        path.rename(trash)
    except FileNotFoundError:
        return  # a racing process already moved it
    shutil.rmtree(trash, ignore_errors=True)


def _write_model(model_dir: Path, spec: TinyModelSpec, seed: int) -> None:
    tokenizer = _train_tokenizer(spec.vocab_size)
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    _save_tokenizer(tokenizer, model_dir, spec.max_position_tokens)
    model = _init_model(spec, seed, ids)
    model.save_pretrained(model_dir)


def _train_tokenizer(vocab_size: int) -> Tokenizer:
    """Byte-level BPE: every unicode string maps to byte tokens, so nothing is ever unknown.

    No BOS is added on encode, so a prompt of N tokens is exactly N tokens (benchmarks
    rely on that) and decode(encode(text)) == text.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([CORPUS_PATH.read_text(encoding="utf-8")], trainer)
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(
            f"{CORPUS_PATH} yields only {tokenizer.get_vocab_size()} BPE tokens, "
            f"{vocab_size} wanted: lower vocab_size or grow the corpus"
        )
    return tokenizer


def _save_tokenizer(tokenizer: Tokenizer, model_dir: Path, max_length: int) -> None:
    """Save via transformers so AutoTokenizer round-trips; transformers 5 moves the chat
    template into chat_template.jinja, so it is copied back into tokenizer_config.json
    for readers that only look there."""
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_length,
    )
    wrapped.save_pretrained(model_dir)
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _init_model(spec: TinyModelSpec, seed: int, ids: dict[str, int]) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_tokens,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        _vary_greedy_output(model, list(ids.values()))
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=[ids[IM_END], ids[EOS]], pad_token_id=ids[PAD]
    )
    return model.to(getattr(torch, spec.dtype))


def _vary_greedy_output(model: LlamaForCausalLM, special_ids: list[int]) -> None:
    """Make greedy output of random weights varied and exactly ``max_tokens`` long.

    With the stock init (std 0.02 everywhere) greedy decoding repeats one token for many
    steps. Unit-variance input embeddings let the current token dominate the residual
    stream, so output walks a random token-to-token map instead; the untied lm_head keeps
    that map from being the identity. Zeroed output rows give special tokens logit 0
    while the best random logit is positive, so greedy runs never stop early on EOS nor
    emit tokens that decode to nothing.
    """
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
        model.lm_head.weight[special_ids] = 0.0
