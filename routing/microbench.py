"""Decision-time microbenchmark: `python -m kaon.routing.microbench [--replicas 64] [--prompt-tokens 4096]`.

Warms the index with many documents spread over the replicas, then times block hashing and
``rank`` + ``on_routed`` of each request; prints p50/p99 in microseconds.
"""

from __future__ import annotations

import argparse
import random
import time

from kaon.routing.hashing import block_hashes
from kaon.routing.registry import make_policy
from kaon.routing.snapshot import ReplicaSnapshot, RoutingRequest


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(policy_name: str, num_replicas: int, prompt_tokens: int, requests: int, documents: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    policy = make_policy(policy_name, seed=seed)
    docs = [[rng.randrange(32_000) for _ in range(prompt_tokens - 64)] for _ in range(documents)]
    hash_us, decide_us = [], []
    for i in range(requests):
        tokens = docs[i % documents] + [rng.randrange(32_000) for _ in range(64)]
        snapshot = [ReplicaSnapshot(f"r{k}", in_flight_requests=rng.randrange(8)) for k in range(num_replicas)]
        started = time.perf_counter()
        request = RoutingRequest(f"q{i}", block_hashes(tokens, 16), len(tokens))
        hashed = time.perf_counter()
        chosen = policy.rank(request, snapshot)[0][0]
        policy.on_routed(request, chosen)
        policy.on_completed(request.request_id, chosen)
        done = time.perf_counter()
        hash_us.append((hashed - started) * 1e6)
        decide_us.append((done - hashed) * 1e6)
    return {
        "hash_p50_us": _percentile(hash_us, 0.5), "hash_p99_us": _percentile(hash_us, 0.99),
        "decide_p50_us": _percentile(decide_us, 0.5), "decide_p99_us": _percentile(decide_us, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", default="prefix_load")
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=4096)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--documents", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    figures = run(args.policy, args.replicas, args.prompt_tokens, args.requests, args.documents, args.seed)
    print(f"{args.policy}, {args.replicas} replicas, {args.prompt_tokens}-token prompts, {args.requests} requests:")
    print(f"  block hashing  p50 {figures['hash_p50_us']:.0f} µs  p99 {figures['hash_p99_us']:.0f} µs")
    print(f"  decision       p50 {figures['decide_p50_us']:.0f} µs  p99 {figures['decide_p99_us']:.0f} µs")


if __name__ == "__main__":
    main()
