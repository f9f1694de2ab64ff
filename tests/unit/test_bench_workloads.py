"""kaon.bench.workloads: deterministic per seed, exact token lengths measured with the
tiny model's tokenizer, shared prefixes shared exactly, multi-turn sessions in order."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from transformers import AutoTokenizer

from kaon.bench.workloads import (
    BenchRequest,
    ChatMessage,
    TextMaker,
    corpus_words,
    generated_shared_prefix,
    multi_turn_chat,
    random_lengths,
    zipf_weights,
)
from kaon.tiny_model import ensure_tiny_model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return AutoTokenizer.from_pretrained(ensure_tiny_model(tmp_path_factory.mktemp("models") / "m"))


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


@pytest.mark.parametrize("num_tokens", [0, 1, 2, 7, 64, 333, 2048])
def test_text_has_exact_token_count(tokenizer, num_tokens: int) -> None:
    text = TextMaker(tokenizer).text(num_tokens, random.Random(num_tokens))
    assert _tokens(tokenizer, text) == num_tokens


def test_shared_prefix_is_deterministic_per_seed(tokenizer) -> None:
    make = lambda seed: generated_shared_prefix(tokenizer, 3, 4, 100, 20, 8, seed=seed)  # noqa: E731
    assert make(5) == make(5)
    assert make(5) != make(6)


def test_shared_prefix_groups_share_exactly_the_system_prompt(tokenizer) -> None:
    requests = generated_shared_prefix(tokenizer, num_groups=4, prompts_per_group=5,
                                       system_prompt_tokens=120, question_tokens=30, output_tokens=8, seed=1)
    assert len(requests) == 20
    by_group: dict[str, list[BenchRequest]] = {}
    for r in requests:
        by_group.setdefault(r.group_id, []).append(r)
    systems = set()
    for group in by_group.values():
        assert len(group) == 5
        assert len({r.messages[0].content for r in group}) == 1
        systems.add(group[0].messages[0].content)
    assert len(systems) == 4
    questions = [r.messages[1].content for r in requests]
    assert len(set(questions)) == len(questions)
    for r in requests:
        assert [m.role for m in r.messages] == ["system", "user"]
        assert _tokens(tokenizer, r.messages[0].content) == 120
        assert _tokens(tokenizer, r.messages[1].content) == 30
        assert r.prompt_tokens == 150 and r.output_tokens == 8


def test_shared_prefix_shuffle_interleaves_groups(tokenizer) -> None:
    ordered = generated_shared_prefix(tokenizer, 4, 4, 16, 8, 4, seed=2, shuffle=False)
    shuffled = generated_shared_prefix(tokenizer, 4, 4, 16, 8, 4, seed=2)
    assert [r.group_id for r in ordered] == [f"g{g}" for g in range(4) for _ in range(4)]
    assert sorted(r.request_id for r in shuffled) == sorted(r.request_id for r in ordered)
    assert [r.group_id for r in shuffled] != [r.group_id for r in ordered]


def test_shared_prefix_group_skew_makes_hot_groups(tokenizer) -> None:
    make = lambda seed, skew: generated_shared_prefix(tokenizer, 8, 25, 16, 4, 2, seed=seed, group_skew=skew)  # noqa: E731
    skewed = make(3, 1.2)
    assert skewed == make(3, 1.2) and skewed != make(4, 1.2)
    assert len(skewed) == 200 and len({r.request_id for r in skewed}) == 200
    counts = Counter(r.group_id for r in skewed)
    assert counts["g0"] > 2 * counts["g3"] > 0 and counts["g0"] > 25 > min(counts.values())
    by_group = {r.group_id: r.messages[0].content for r in skewed}
    assert all(r.messages[0].content == by_group[r.group_id] for r in skewed)
    assert make(3, 0.0) == generated_shared_prefix(tokenizer, 8, 25, 16, 4, 2, seed=3)
    weights = zipf_weights(4, 1.0)
    assert sum(weights) == pytest.approx(1.0) and weights[0] == pytest.approx(2 * weights[1])
    assert zipf_weights(3, 0.0) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="skew"):
        zipf_weights(3, -0.5)


def test_multi_turn_sessions(tokenizer) -> None:
    requests = multi_turn_chat(tokenizer, num_users=3, rounds=2, system_prompt_tokens=50,
                               user_turn_tokens=12, output_tokens=5, seed=0)
    assert requests == multi_turn_chat(tokenizer, 3, 2, 50, 12, 5, seed=0)
    assert [(r.session_id, r.round_index) for r in requests] == [
        ("u0", 0), ("u1", 0), ("u2", 0), ("u0", 1), ("u1", 1), ("u2", 1)
    ]
    first, later = requests[:3], requests[3:]
    assert len({r.messages[0] for r in first}) == 1  # one system prompt for every user
    assert all(r.messages[0].role == "system" and _tokens(tokenizer, r.messages[0].content) == 50 for r in first)
    assert all(len(r.messages) == 1 and r.messages[0].role == "user" for r in later)
    turns = [r.messages[-1].content for r in requests]
    assert len(set(turns)) == 6 and all(_tokens(tokenizer, t) == 12 for t in turns)
    assert [r.prompt_tokens for r in requests] == [62] * 3 + [12] * 3


def test_random_lengths_within_ranges_and_exact(tokenizer) -> None:
    requests = random_lengths(tokenizer, 40, 10, 300, 2, 9, seed=3)
    assert requests == random_lengths(tokenizer, 40, 10, 300, 2, 9, seed=3)
    assert requests != random_lengths(tokenizer, 40, 10, 300, 2, 9, seed=4)
    for r in requests:
        assert 10 <= r.prompt_tokens <= 300 and 2 <= r.output_tokens <= 9
        assert _tokens(tokenizer, r.messages[0].content) == r.prompt_tokens
    assert len({r.prompt_tokens for r in requests}) > 20


def test_random_lengths_plain_prompts(tokenizer) -> None:
    requests = random_lengths(tokenizer, 5, 40, 40, 3, 3, seed=0, chat=False)
    assert all(r.messages is None and _tokens(tokenizer, r.prompt) == 40 for r in requests)


def test_request_needs_exactly_one_prompt_form() -> None:
    with pytest.raises(ValueError):
        BenchRequest("x", 4, 1)
    with pytest.raises(ValueError):
        BenchRequest("x", 4, 1, messages=(ChatMessage("user", "a"),), prompt="a")


def test_corpus_words_are_plain_ascii_words() -> None:
    words = corpus_words()
    assert len(words) > 1000 and all(w.isascii() and w.isalpha() for w in words)
    assert list(words) == sorted(set(words))
