"""Routing policies by the names used in the config and on the command line."""

from __future__ import annotations

from collections.abc import Callable

from kaon.routing.baselines import PowerOfTwo, RoundRobin
from kaon.routing.policy import RoutingPolicy
from kaon.routing.prefix_load import PrefixLoad

POLICIES: dict[str, Callable[..., RoutingPolicy]] = {
    "prefix_load": PrefixLoad,
    "round_robin": RoundRobin,
    "power_of_two": PowerOfTwo,
}


def make_policy(name: str, seed: int = 0, **options) -> RoutingPolicy:
    if name not in POLICIES:
        raise ValueError(f"unknown routing policy {name!r}; choose from {sorted(POLICIES)}")
    return POLICIES[name](seed=seed, **options)
