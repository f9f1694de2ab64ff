"""Seeded, deterministic workloads: lists of ``BenchRequest`` with exact token lengths.

Text is made of random words from ``kaon/data/corpus.txt`` and trimmed or padded until the
given tokenizer encodes it (without special tokens) to exactly the requested count. Chat
template tokens (role markers, BOS) are not counted: ``prompt_tokens`` is the tokens of the
message contents, so the server's ``usage.prompt_tokens`` is a few tokens more per message.

The same tokenizer, arguments and seed always give the same requests.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Protocol, Sequence

MAX_FIX_ROUNDS = 16
MAX_DISTINCT_TRIES = 100


class Tokenizer(Protocol):
    """The part of a ``transformers`` tokenizer the generators use."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], **kwargs: object) -> str: ...


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str

    def to_openai(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One request of a workload: either chat ``messages`` or a plain ``prompt``.

    ``prompt_tokens`` counts the tokens of this request's own text (see the module note on
    chat templates). A request with a ``session_id`` belongs to a conversation: the runner
    sends the session's earlier messages and actual answers first, then ``messages``, and
    sends round ``round_index`` only after round ``round_index - 1`` has finished; those
    history tokens are not in ``prompt_tokens``. ``group_id`` names the shared prefix.
    """

    request_id: str
    output_tokens: int
    prompt_tokens: int
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    group_id: str = ""
    session_id: str | None = None
    round_index: int = 0

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError(f"{self.request_id}: exactly one of messages and prompt must be set")
        if self.output_tokens < 1:
            raise ValueError(f"{self.request_id}: output_tokens must be >= 1, got {self.output_tokens}")


@lru_cache(maxsize=1)
def corpus_words() -> tuple[str, ...]:
    """The distinct ASCII words of kaon's corpus, sorted (a stable sampling population)."""
    text = resources.files("kaon").joinpath("data/corpus.txt").read_text(encoding="utf-8")
    return tuple(sorted(set(re.findall(r"[A-Za-z]+", text))))


class TextMaker:
    """Makes random-word text that ``tokenizer`` encodes to exactly a given token count."""

    def __init__(self, tokenizer: Tokenizer, words: Sequence[str] | None = None):
        self._tokenizer = tokenizer
        self._words = tuple(words) if words is not None else corpus_words()
        sample = random.Random(0).choices(self._words, k=200)
        self._tokens_per_word = max(1.0, len(self._encode(" ".join(sample))) / len(sample))

    def count(self, text: str) -> int:
        return len(self._encode(text))

    def text(self, num_tokens: int, rng: random.Random) -> str:
        """Random words trimmed/padded to ``num_tokens`` tokens, verified by re-encoding.

        Raises ValueError if the tokenizer never settles on the count (a cut that changes
        the merges around it each time), which no BPE tokenizer tried here has done.
        """
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        if num_tokens == 0:
            return ""
        words = [rng.choice(self._words) for _ in range(int(num_tokens / self._tokens_per_word) + 1)]
        ids = self._encode(" ".join(words))
        while len(ids) < num_tokens:
            missing = int((num_tokens - len(ids)) / self._tokens_per_word) + 1
            words += [rng.choice(self._words) for _ in range(missing)]
            ids = self._encode(" ".join(words))
        ids = ids[:num_tokens]
        for _ in range(MAX_FIX_ROUNDS):
            text = self._decode(ids)
            again = self._encode(text)
            if len(again) == num_tokens:
                return text
            if len(again) > num_tokens:
                ids = again[:num_tokens]
            else:
                ids = again + self._encode(" " + rng.choice(self._words))[: num_tokens - len(again)]
        raise ValueError(f"could not make text of exactly {num_tokens} tokens with this tokenizer")

    def distinct_texts(self, count: int, num_tokens: int, rng: random.Random) -> list[str]:
        """``count`` pairwise different texts of ``num_tokens`` tokens each."""
        texts: list[str] = []
        seen: set[str] = set()
        for _ in range(count):
            for _ in range(MAX_DISTINCT_TRIES):
                text = self.text(num_tokens, rng)
                if text not in seen:
                    break
            else:
                raise ValueError(f"cannot make {count} distinct texts of {num_tokens} tokens")
            seen.add(text)
            texts.append(text)
        return texts

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)


def generated_shared_prefix(
    tokenizer: Tokenizer,
    num_groups: int = 64,
    prompts_per_group: int = 16,
    system_prompt_tokens: int = 2048,
    question_tokens: int = 128,
    output_tokens: int = 256,
    seed: int = 0,
    shuffle: bool = True,
    group_skew: float = 0.0,
) -> list[BenchRequest]:
    """SGLang bench_serving's ``generated-shared-prefix`` dataset (defaults are SGLang's).

    Each group has one system prompt of ``system_prompt_tokens``; its requests share it
    exactly (same string) and differ in a ``question_tokens`` user message; all questions of
    the workload are distinct, and so are the system prompts. There are ``num_groups`` ×
    ``prompts_per_group`` requests: ``prompts_per_group`` per group, or, with ``group_skew``
    S > 0, each request's group drawn (seeded) from the Zipf law of ``zipf_weights`` — a few
    hot system prompts and a long tail, as production traces have. ``shuffle`` interleaves
    the groups (seeded), as clients of a real service would.
    """
    rng = random.Random(seed)
    maker = TextMaker(tokenizer)
    systems = maker.distinct_texts(num_groups, system_prompt_tokens, rng)
    total = num_groups * prompts_per_group
    questions = maker.distinct_texts(total, question_tokens, rng)
    if group_skew != 0:
        groups = sorted(rng.choices(range(num_groups), weights=zipf_weights(num_groups, group_skew), k=total))
    else:
        groups = [group for group in range(num_groups) for _ in range(prompts_per_group)]
    requests = []
    asked = [0] * num_groups
    for group, question in zip(groups, questions):
        requests.append(
            BenchRequest(
                request_id=f"spx-g{group}-q{asked[group]}",
                output_tokens=output_tokens,
                prompt_tokens=system_prompt_tokens + question_tokens,
                messages=(ChatMessage("system", systems[group]), ChatMessage("user", question)),
                group_id=f"g{group}",
            )
        )
        asked[group] += 1
    if shuffle:
        rng.shuffle(requests)
    return requests


def zipf_weights(num_groups: int, skew: float) -> list[float]:
    """Popularity of groups 0, 1, …: group k's share ∝ 1 / (k + 1) ** ``skew``, summing to 1
    (0: uniform). Shared by the bench and the simulator's workloads."""
    if skew < 0:
        raise ValueError(f"group skew must be >= 0, got {skew}")
    raw = [1.0 / (k + 1) ** skew for k in range(num_groups)]
    total = sum(raw)
    return [w / total for w in raw]


def multi_turn_chat(
    tokenizer: Tokenizer,
    num_users: int = 16,
    rounds: int = 8,
    system_prompt_tokens: int = 1000,
    user_turn_tokens: int = 100,
    output_tokens: int = 100,
    seed: int = 0,
) -> list[BenchRequest]:
    """Multi-round QA (vLLM production-stack style): users × rounds on one system prompt.

    All users share one system prompt; each user has a session whose round ``r`` sends the
    system prompt, every earlier user turn and the server's actual earlier answers, then a
    new ``user_turn_tokens`` question (see ``BenchRequest`` for how the runner builds that).
    Requests are ordered round by round (round 0 of every user, then round 1, …), so a
    schedule that starts them in list order keeps every user's rounds in sequence.
    """
    rng = random.Random(seed)
    maker = TextMaker(tokenizer)
    system = maker.text(system_prompt_tokens, rng)
    turns = maker.distinct_texts(num_users * rounds, user_turn_tokens, rng)
    requests = []
    for round_index in range(rounds):
        for user in range(num_users):
            turn = ChatMessage("user", turns[user * rounds + round_index])
            first = round_index == 0
            requests.append(
                BenchRequest(
                    request_id=f"mt-u{user}-r{round_index}",
                    output_tokens=output_tokens,
                    prompt_tokens=(system_prompt_tokens if first else 0) + user_turn_tokens,
                    messages=(ChatMessage("system", system), turn) if first else (turn,),
                    group_id="shared-system",
                    session_id=f"u{user}",
                    round_index=round_index,
                )
            )
    return requests


def random_lengths(
    tokenizer: Tokenizer,
    num_requests: int,
    input_tokens_min: int = 256,
    input_tokens_max: int = 1024,
    output_tokens_min: int = 64,
    output_tokens_max: int = 256,
    seed: int = 0,
    chat: bool = True,
) -> list[BenchRequest]:
    """``num_requests`` independent prompts; input and output lengths are drawn uniformly
    from the inclusive ranges. ``chat`` sends one user message, else a plain prompt."""
    if not (0 < input_tokens_min <= input_tokens_max and 0 < output_tokens_min <= output_tokens_max):
        raise ValueError("token ranges must satisfy 0 < min <= max")
    rng = random.Random(seed)
    maker = TextMaker(tokenizer)
    requests = []
    for index in range(num_requests):
        input_tokens = rng.randint(input_tokens_min, input_tokens_max)
        output_tokens = rng.randint(output_tokens_min, output_tokens_max)
        text = maker.text(input_tokens, rng)
        requests.append(
            BenchRequest(
                request_id=f"rnd-{index}",
                output_tokens=output_tokens,
                prompt_tokens=input_tokens,
                messages=(ChatMessage("user", text),) if chat else None,
                prompt=None if chat else text,
                group_id=f"rnd-{index}",
            )
        )
    return requests
