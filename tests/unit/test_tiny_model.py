"""Contracts of kaon.tiny_model: deterministic bytes, lossless tokenizer, ChatML template,
and ensure/generate that never leave a partial model behind. No vLLM, no Ray."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from types import MappingProxyType

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from kaon import tiny_model
from kaon.tiny_model import SIZES, STAMP_FILE, ensure_tiny_model, generate_tiny_model


def _file_hashes(model_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(model_dir.iterdir())}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_tiny_model(tmp_path_factory.mktemp("models") / "tiny", "tiny", seed=0)


@pytest.fixture
def write_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every real model write, to tell reuse from regeneration."""
    calls: list[Path] = []
    real_write = tiny_model._write_model

    def spy(model_dir: Path, spec: tiny_model.TinyModelSpec, seed: int) -> None:
        calls.append(model_dir)
        real_write(model_dir, spec, seed)

    monkeypatch.setattr(tiny_model, "_write_model", spy)
    return calls


@pytest.fixture
def small_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in "bench" spec that differs from tiny but generates as fast."""
    bench = dataclasses.replace(SIZES["tiny"], num_layers=1)
    monkeypatch.setattr(tiny_model, "SIZES", MappingProxyType({"tiny": SIZES["tiny"], "bench": bench}))


def test_generation_is_deterministic_per_seed(tiny_dir: Path, tmp_path: Path) -> None:
    again = generate_tiny_model(tmp_path / "again", "tiny", seed=0)
    assert _file_hashes(again) == _file_hashes(tiny_dir)


def test_seed_changes_weights_only(tiny_dir: Path, tmp_path: Path) -> None:
    other = _file_hashes(generate_tiny_model(tmp_path / "other", "tiny", seed=1))
    same = _file_hashes(tiny_dir)
    assert other["model.safetensors"] != same["model.safetensors"]
    assert other["tokenizer.json"] == same["tokenizer.json"]


def test_expected_files_and_stopping_tokens(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    generation = json.loads((tiny_dir / "generation_config.json").read_text())
    config = json.loads((tiny_dir / "config.json").read_text())
    stamp = json.loads((tiny_dir / STAMP_FILE).read_text())
    ids = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|end_of_text|>"])
    assert generation["eos_token_id"] == ids
    assert config["vocab_size"] == len(tokenizer) == SIZES["tiny"].vocab_size
    assert stamp["size"] == "tiny" and stamp["seed"] == 0
    assert (tiny_dir / "chat_template.jinja").read_text() == tiny_model.CHAT_TEMPLATE


@pytest.mark.parametrize(
    "text",
    [
        "hello world",
        "  leading spaces, tabs\tand\nnewlines\r\n",
        "naïve café — «quotes» ½ ∑ ∞",
        "日本語のテキストと한국어 그리고 中文",
        "emoji 👩‍👩‍👧 🇺🇳 and combining e\u0301",
        "\x00\x07 control \ufeff bom \U0010ffff",
    ],
)
def test_tokenizer_round_trips_any_unicode(tiny_dir: Path, text: str) -> None:
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_dir)
    ids = tokenizer.encode(text)
    assert ids and max(ids) < len(tokenizer)
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_configured(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert tokenizer.bos_token == "<|begin_of_text|>"
    assert tokenizer.eos_token == "<|end_of_text|>"
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.encode("<|im_start|>") == [tokenizer.convert_tokens_to_ids("<|im_start|>")]


def test_chat_template_string_content_with_generation_prompt(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_list_of_parts_content(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    parts = [
        {"type": "text", "text": "look "},
        {"type": "image_url", "image_url": {"url": "http://example.invalid/x.png"}},
        {"type": "text", "text": "here"},
    ]
    messages = [{"role": "user", "content": parts}, {"role": "assistant", "content": "ok"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == "<|im_start|>user\nlook here<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"


def test_ensure_reuses_matching_model(tmp_path: Path, write_calls: list[Path]) -> None:
    out = tmp_path / "m"
    ensure_tiny_model(out)
    before = _file_hashes(out)
    assert ensure_tiny_model(out) == out
    assert len(write_calls) == 1
    assert _file_hashes(out) == before


def test_ensure_regenerates_when_size_differs(
    tmp_path: Path, write_calls: list[Path], small_bench: None
) -> None:
    out = tmp_path / "m"
    tiny_hashes = _file_hashes(ensure_tiny_model(out, "tiny"))
    ensure_tiny_model(out, "bench")
    assert len(write_calls) == 2
    assert json.loads((out / STAMP_FILE).read_text())["size"] == "bench"
    assert _file_hashes(out)["model.safetensors"] != tiny_hashes["model.safetensors"]


def test_ensure_replaces_model_without_stamp(tmp_path: Path, write_calls: list[Path]) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text("{half written")
    ensure_tiny_model(out)
    assert len(write_calls) == 1
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"


def test_failed_generation_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(model_dir: Path, spec: tiny_model.TinyModelSpec, seed: int) -> None:
        (model_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny_model, "_write_model", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_tiny_model(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
