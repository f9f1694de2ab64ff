"""kaon's Serve mode reaches every Ray process: the local `ray start` and the cluster image."""

import re
from pathlib import Path

from kaon.deployments.serve_env import SERVE_ENV, with_serve_env

DOCKERFILE = Path(__file__).parents[2] / "cluster" / "Dockerfile"


def test_settings_are_added_and_an_operators_value_wins():
    env = with_serve_env({"PATH": "/bin", "RAY_SERVE_ENABLE_HA_PROXY": "0"})
    assert env["PATH"] == "/bin"
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"


def test_cluster_image_sets_every_setting():
    pairs = dict(re.findall(r"(\w+)=(\S+)", " ".join(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ENV "))))
    assert {name: pairs.get(name) for name in SERVE_ENV} == SERVE_ENV
