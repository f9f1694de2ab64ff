"""The Helm chart (helm/kaon) and the Python it deploys: the values against their schema, the
default kaon config valid on the chart's worker groups, kaon's Serve application builder,
`kaon serve-config` against Ray's own Serve config schema, and the rendered RayService (with
Helm's Go SDK from the helm-python-sdk package, where it is installed; no cluster needed)."""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import ValidationError
from jsonschema.validators import validator_for
from ray._common.utils import import_attr
from ray.serve.schema import ServeDeploySchema

from kaon.cli import APP_BUILDER, main, serve_config_file
from kaon.cluster.placement import plan_replica
from kaon.config import ConfigError, apply_overrides, load_config, parse_config
from kaon.deployments.serve_env import SERVE_ENV

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kaon"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
TINY_CONFIG = ROOT / "configs" / "tiny-cpu.yaml"
GPU_CONFIG = ROOT / "configs" / "gpu-cluster.yaml"


def chart_kaon_config(values: dict) -> dict:
    """The kaon config the chart deploys: ``kaon`` with node_types made from the worker groups
    (what templates/_helpers.tpl does; the rendering tests hold the template to it)."""
    config = copy.deepcopy(values["kaon"])
    config["cluster"]["node_types"] = [
        {"name": group["name"], "gpus": group["gpus"], "max_nodes": group["maxReplicas"]} for group in values["workerGroups"]
    ]
    return config


def gpu_cluster_values() -> dict:
    """Values serving configs/gpu-cluster.yaml on worker groups shaped like cluster/aws.yaml's."""
    values = copy.deepcopy(VALUES)
    kaon = yaml.safe_load(GPU_CONFIG.read_text())
    node_types = kaon["cluster"].pop("node_types")
    del kaon["cluster"]["address"]
    values["kaon"] = kaon | {"http": {"host": "0.0.0.0", "port": 8000}}
    values["workerGroups"] = [
        {"name": t["name"], "gpus": t["gpus"], "cpu": "40", "memory": "160Gi", "replicas": 0, "maxReplicas": t["max_nodes"]}
        for t in node_types
    ]
    return values


def test_values_match_their_schema():
    validator = validator_for(SCHEMA)
    validator.check_schema(SCHEMA)
    validator(SCHEMA).validate(VALUES)
    validator(SCHEMA).validate(gpu_cluster_values())


def _set(path: str, value):
    def change(values: dict) -> None:
        *parents, last = path.split(".")
        target = values
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (_set("workerGroups.0.gpus", 0), "gpus"),
        (_set("workerGroups.0.name", "GPU_4x"), "name"),
        (_set("workerGroups", []), "workerGroups"),
        (_set("kaon.cluster.node_types", [{"name": "gpu-4x", "gpus": 4, "max_nodes": 2}]), "node_types"),
        (_set("kaon.cluster.address", "auto"), "address"),
        (_set("kaon.cluster.device", "auto"), "device"),
        (_set("upgradeStrategy", "InPlace"), "upgradeStrategy"),
        (_set("head.cpu", "six"), "cpu"),
        (_set("serviceType", "LoadBalancer"), "serviceType"),
    ],
)
def test_schema_refuses_values_the_chart_cannot_deploy(change, where):
    values = copy.deepcopy(VALUES)
    change(values)
    with pytest.raises(ValidationError) as caught:
        validator_for(SCHEMA)(SCHEMA).validate(values)
    assert where in str(caught.value)


@pytest.mark.parametrize("values", [VALUES, gpu_cluster_values()], ids=["default", "gpu-cluster"])
def test_kaon_config_is_valid_and_fits_the_worker_groups(values):
    config = parse_config(chart_kaon_config(values))
    groups = {(g["name"], g["gpus"], g["maxReplicas"]) for g in values["workerGroups"]}
    assert {(t.name, t.gpus, t.max_nodes) for t in config.cluster.node_types} == groups
    assert all(plan_replica(m, "gpu", config.cluster.node_types).strategy == "STRICT_PACK" for m in config.models)
    assert (config.http.host, config.http.port, config.cluster.device) == ("0.0.0.0", 8000, "gpu")


def test_kaon_refuses_a_config_the_worker_groups_cannot_hold():
    values = copy.deepcopy(VALUES)
    values["workerGroups"][0]["gpus"] = 1
    with pytest.raises(ConfigError, match="models.0.engine.tensor_parallel_size"):
        parse_config(chart_kaon_config(values))


def test_ray_containers_get_kaons_serve_mode():
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    pairs = dict(re.findall(r'- name: (\w+)\n\s+value: "(\S+)"', helpers))
    assert {name: pairs.get(name) for name in SERVE_ENV} == SERVE_ENV


# kaon's Serve application builder (importing it loads vLLM: tens of seconds on 2 cores)


@pytest.fixture(scope="module")
def app_builder():
    from kaon.deployments.app import app_builder

    return app_builder


def test_app_builder_is_what_the_import_path_names(app_builder):
    assert import_attr(APP_BUILDER) is app_builder


def test_app_builder_binds_the_router_and_each_model_without_ray(app_builder):
    import ray
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    args = {"config": yaml.safe_load(TINY_CONFIG.read_text()), "set": {"models.0.replicas": 3}}
    app = call_user_app_builder_with_args_if_necessary(app_builder, args)   # as Serve calls it
    router = app._bound_deployment
    models = router.init_args[1]
    assert router.name == "router"
    assert {name: model._bound_deployment.name for name, model in models.items()} == {"kaon-tiny": "model-kaon-tiny"}
    assert models["kaon-tiny"]._bound_deployment.num_replicas == 3
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"config": {"models": [{"name": "m", "source": "x", "replicas": -1}]}}, "models.0.replicas"),
        ({"config": {"models": [{"name": "m", "source": "x", "replcas": 2}]}}, "models.0.replcas"),
        ({"config": {"models": [{"name": "m", "source": "x"}]}, "set": {"router.replicas": 0}}, "router.replicas"),
        ({"config": {"models": [{"name": "m", "source": "x"}]}, "set": ["router.replicas=2"]}, "args.set"),
        ({"config": {"models": [{"name": "m", "source": "x"}]}, "sets": {}}, "sets"),
        ({}, "args.config"),
    ],
)
def test_app_builder_refuses_bad_args_naming_the_field(app_builder, args, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        app_builder(args)


# `kaon serve-config`


def test_serve_config_is_a_serve_config_ray_accepts(capsys):
    assert main(["serve-config", "--config", str(GPU_CONFIG), "--set", "router.replicas=3", "--set", "http.port=9000"]) == 0
    schema = ServeDeploySchema.model_validate(yaml.safe_load(capsys.readouterr().out))
    [app] = schema.applications
    assert (schema.http_options.host, schema.http_options.port) == ("127.0.0.1", 9000)
    assert (app.name, app.route_prefix, app.import_path) == ("kaon", "/", APP_BUILDER)
    assert parse_config(app.args["config"]) == apply_overrides(load_config(GPU_CONFIG), {"router.replicas": 3, "http.port": 9000})


def test_serve_config_refuses_a_bad_setting(capsys):
    assert main(["serve-config", "--set", "router.replicas=0"]) == 2
    assert "router.replicas" in capsys.readouterr().err


# The rendered chart, by Helm's own Go SDK (helm-python-sdk: no helm binary, no cluster)


@pytest.fixture(scope="module")
def helm():
    return pytest.importorskip(
        "helm_python", reason="helm-python-sdk (Helm's Go SDK for Python) is not installed: pip install helm-python-sdk"
    )


@pytest.fixture(scope="module")
def render(helm):
    def render(values: dict | None = None) -> dict[str, dict]:
        with helm.Chart.load(CHART) as chart:
            manifests = chart.render(values, name="kaon", namespace="llm")
        documents = [doc for path, text in manifests.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]
        return {doc["kind"]: doc for doc in documents}

    return render


def test_chart_lints_clean(helm):
    report = helm.lint(CHART, strict=True)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [VALUES, gpu_cluster_values()], ids=["default", "gpu-cluster"])
def test_rayservice_serves_kaons_config_on_its_worker_groups(render, values):
    service = render(values)["RayService"]
    assert service["apiVersion"] == "ray.io/v1"
    served = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    [app] = served.applications
    config = parse_config(app.args["config"])
    assert config == parse_config(chart_kaon_config(values))
    expected = ServeDeploySchema.model_validate(serve_config_file(config))
    assert served.http_options == expected.http_options
    assert (app.name, app.route_prefix, app.import_path) == (expected.applications[0].name, "/", APP_BUILDER)

    cluster = service["spec"]["rayClusterConfig"]
    assert (cluster["rayVersion"], cluster["enableInTreeAutoscaling"]) == ("2.60.0", True)
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0" and head["labels"] == {"kaon.io/node-type": "head"}
    workers = cluster["workerGroupSpecs"]
    assert [(w["groupName"], w["minReplicas"], w["maxReplicas"]) for w in workers] == [
        (g["name"], 0, g["maxReplicas"]) for g in values["workerGroups"]
    ]
    for worker, group in zip(workers, values["workerGroups"]):
        [container] = worker["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == group["gpus"]
        assert worker["labels"] == {"kaon.io/node-type": group["name"]}


def test_every_ray_container_runs_the_image_with_serve_mode_and_shared_memory(render):
    cluster = render()["RayService"]["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]] + [w["template"] for w in cluster["workerGroupSpecs"]]
    for pod in pods:
        [container] = pod["spec"]["containers"]
        assert container["image"] == "REGISTRY/kaon:0.1.0-gpu"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {name: env.get(name) for name in SERVE_ENV} == SERVE_ENV and "HF_TOKEN" not in env
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["spec"]["volumes"]


def test_nothing_is_exposed_outside_the_cluster(render):
    manifests = render({"podMonitor": {"enabled": True}})
    assert set(manifests) == {"RayService", "PodMonitor"}
    assert not re.search(r"LoadBalancer|NodePort|enableIngress|hostPort|hostNetwork", yaml.safe_dump(manifests))
    assert manifests["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]["serviceType"] == "ClusterIP"


def test_optional_token_and_pod_monitor(render):
    assert set(render()) == {"RayService"}
    manifests = render({"hfToken": {"secretName": "hf"}, "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}}})
    [container] = manifests["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}} in container["env"]
    monitor = manifests["PodMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "interval": "15s"}]


def test_helm_refuses_values_outside_the_schema(helm, render):
    with pytest.raises(helm.HelmValuesError, match="workerGroups/0/gpus"):
        render({"workerGroups": [{"name": "g", "gpus": 0, "cpu": "1", "memory": "1Gi", "replicas": 0, "maxReplicas": 1}]})
