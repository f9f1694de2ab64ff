"""The `ray up` YAMLs pass Ray's own cluster-config validation offline and keep kaon's rules:
a head without GPUs, GPU workers from zero, a private dashboard, node types the kaon config knows."""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from kaon.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAMLS = sorted((ROOT / "cluster").glob("*.yaml"))
GPU_CONFIG = ROOT / "configs" / "gpu-cluster.yaml"


@pytest.fixture(params=CLUSTER_YAMLS, ids=lambda path: path.name)
def cluster_yaml(request) -> dict:
    return yaml.safe_load(request.param.read_text())


def test_every_provider_has_a_yaml():
    assert {path.name for path in CLUSTER_YAMLS} >= {"aws.yaml", "gcp.yaml"}


def test_ray_accepts_the_yaml(cluster_yaml):
    validate_config(prepare_config(copy.deepcopy(cluster_yaml)))


def test_head_takes_no_replica_and_gpu_workers_start_from_zero(cluster_yaml):
    types = cluster_yaml["available_node_types"]
    head = types[cluster_yaml["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    workers = [spec for name, spec in types.items() if name != cluster_yaml["head_node_type"]]
    assert workers and all(spec["min_workers"] == 0 and spec["resources"]["GPU"] > 0 for spec in workers)
    assert all(spec["labels"]["kaon.io/node-type"] == name for name, spec in types.items())


def test_ports_stay_private(cluster_yaml):
    [head_start] = [command for command in cluster_yaml["head_start_ray_commands"] if "--head" in command]
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in yaml.safe_dump(cluster_yaml)
    assert "security_group" not in cluster_yaml["provider"]


def test_nodes_run_kaon_in_ray_260_docker(cluster_yaml):
    assert cluster_yaml["docker"]["image"].startswith("rayproject/ray:2.60.0-py311-gpu")
    assert cluster_yaml["file_mounts"] == {"/home/ray/kaon": "."}
    assert any("/home/ray/kaon[gpu]" in command for command in cluster_yaml["setup_commands"])


def test_kaon_config_knows_the_clusters_gpu_node_types(cluster_yaml):
    config = load_config(GPU_CONFIG)
    types = cluster_yaml["available_node_types"]
    declared = {(t.name, t.gpus, t.max_nodes) for t in config.cluster.node_types}
    offered = {(name, spec["resources"]["GPU"], spec["max_workers"]) for name, spec in types.items() if spec["resources"]["GPU"]}
    assert declared == offered
    assert config.http.host == "127.0.0.1"
