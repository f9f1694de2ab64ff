"""Placement across real raylets: a head and four worker nodes with 2 fake GPUs each on this
machine (kaon.cluster.local_multinode), the GPU placement plan, and the fake engine."""

import os
import subprocess
import sys
import time

import openai
import pytest
import ray
from ray import serve
from ray.serve.api import RunTarget

from kaon.cluster.local_multinode import AUTH_ENV, NODE_NAME_LABEL, LocalMultinode, default_nodes
from kaon.cluster.placement import plan_replica
from kaon.cluster.status import format_apps, read_apps
from kaon.config import parse_config
from kaon.deployments.app import build_app
from kaon.engine.fake import FakeEngine
from tests.conftest import free_port

pytestmark = pytest.mark.serve

GPU_2 = {"name": "gpu-2", "gpus": 2, "max_nodes": 4}
CONFIG = parse_config({
    "models": [
        {"name": "tp2", "source": "kaon-tiny:tiny", "engine": {"tensor_parallel_size": 2}},
        {"name": "tp2pp2", "source": "kaon-tiny:tiny", "engine": {"tensor_parallel_size": 2, "pipeline_parallel_size": 2}},
    ],
    "cluster": {"device": "gpu", "node_types": [GPU_2]},
})
TOO_BIG = parse_config({
    "models": [{"name": "tp8", "source": "kaon-tiny:tiny", "engine": {"tensor_parallel_size": 8}}],
    "cluster": {"device": "gpu", "node_types": [{"name": "gpu-8", "gpus": 8, "max_nodes": 1}]},
})
"""Valid for a cluster that can add an 8-GPU node; this one has none, so its replica waits."""
MOVE_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def multinode(tmp_path_factory):
    cluster = LocalMultinode(default_nodes(workers=4, gpus_per_worker=2, cpus_per_worker=2), free_port(), tmp_path_factory.mktemp("nodes"))
    try:
        cluster.start()
        yield cluster
        serve.shutdown()
    finally:
        ray.shutdown()
        cluster.stop()


@pytest.fixture(scope="module")
def client(multinode, http_port):
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": http_port})
    serve.run(build_app(CONFIG, "gpu", FakeEngine), name="kaon", route_prefix="/")
    return openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="unused", max_retries=0)


def _placements(model: str) -> list:
    [app] = [a for a in read_apps() if a.name == "kaon"]
    [deployment] = [d for d in app.deployments if d.name == f"model-{model}"]
    return deployment.placements


def _answers(client, model: str) -> bool:
    reply = client.completions.create(model=model, prompt="hi", max_tokens=3)
    return reply.usage.completion_tokens == 3


def test_tp2_replica_packs_onto_one_node(client):
    [replica] = _placements("tp2")
    assert replica.strategy == "STRICT_PACK"
    assert len(set(replica.bundle_nodes)) == 1
    assert replica.bundle_nodes[0] == replica.node
    assert replica.node.labels["kaon.io/node-type"] == "gpu-2"
    assert _answers(client, "tp2")


def test_tp2_pp2_spans_two_nodes_with_each_stage_on_one(client):
    [replica] = _placements("tp2pp2")
    plan = plan_replica(CONFIG.model("tp2pp2"), "gpu", CONFIG.cluster.node_types)
    assert replica.strategy == plan.strategy == "PACK"
    stage_nodes = [{replica.bundle_nodes[index] for index in stage} for stage in plan.stages]
    assert [len(nodes) for nodes in stage_nodes] == [1, 1]
    assert stage_nodes[0] != stage_nodes[1]
    assert replica.bundle_nodes[0] == replica.node
    assert {*stage_nodes[0], *stage_nodes[1]}.isdisjoint(set(_placements("tp2")[0].bundle_nodes))
    assert _answers(client, "tp2pp2")


def test_replica_that_cannot_fit_stays_pending_and_status_says_why(client, multinode):
    target = RunTarget(target=build_app(TOO_BIG, "gpu", FakeEngine), name="too-big", route_prefix="/too-big")
    serve.run_many([target], wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
    try:
        started = time.monotonic()
        while "no place yet" not in (text := format_apps(read_apps())) and time.monotonic() < started + 60:
            time.sleep(1)
        print(f"pending after {time.monotonic() - started:.1f} s:\n{text}")
        env = dict(os.environ, **AUTH_ENV)
        result = subprocess.run([sys.executable, "-m", "kaon.cli", "status", "--address", multinode.address],
                                capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert ("no place yet: needs GPU 8, CPU 1 on one node (STRICT_PACK); "
                "the most any node has is GPU 2, CPU 4 [Ray: INFEASIBLE]") in result.stdout
        assert "GPU workers (STRICT_PACK): 2 on node" in result.stdout
        assert "application kaon: RUNNING" in result.stdout
    finally:
        serve.delete("too-big", _blocking=False)


def test_killing_a_worker_node_moves_its_replica_to_another(client, multinode):
    [before] = _placements("tp2")
    multinode.kill(before.node.labels[NODE_NAME_LABEL])
    deadline = time.monotonic() + MOVE_TIMEOUT_S
    after = None
    while time.monotonic() < deadline:
        running = [p for p in _placements("tp2") if p.state == "RUNNING" and p.node not in (None, before.node)]
        if running:
            [after] = running
            break
        time.sleep(1)
    print(f"moved after {MOVE_TIMEOUT_S - (deadline - time.monotonic()):.1f} s")
    assert after is not None, format_apps(read_apps())
    assert len(set(after.bundle_nodes)) == 1
    assert after.node.labels[NODE_NAME_LABEL] != before.node.labels[NODE_NAME_LABEL]
    assert _answers(client, "tp2")
