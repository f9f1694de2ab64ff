"""Routing policies by the names used in the config and on the command line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaon.routing.baselines import PowerOfTwo, RoundRobin
from kaon.routing.policy import RoutingPolicy
from kaon.routing.prefix_load import PrefixLoad, PrefixLoadSettings

POLICIES: dict[str, Callable[..., RoutingPolicy]] = {
    "prefix_load": PrefixLoad,
    "round_robin": RoundRobin,
    "power_of_two": PowerOfTwo,
}


def make_policy(name: str, seed: int = 0, settings: dict[str, Any] | None = None, **options: Any) -> RoutingPolicy:
    """``settings`` are plain values (they travel through Ray Serve's JSON config) for the
    policies that take settings; ``options`` (e.g. the simulator's ``clock``) pass through."""
    if name not in POLICIES:
        raise ValueError(f"unknown routing policy {name!r}; choose from {sorted(POLICIES)}")
    if name == "prefix_load":
        options["settings"] = PrefixLoadSettings(**(settings or {}))
    return POLICIES[name](seed=seed, **options)
