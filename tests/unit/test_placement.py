"""Replica placement planned from TP × PP and node shapes; configs that can never fit; no Ray."""

import pytest

from kaon.cli import _parser, serve_overrides
from kaon.cluster.placement import NodeResources, plan_replica, unfit_reason
from kaon.config import ConfigError, apply_overrides, parse_config
from kaon.engine.args import cpu_threads_bind

GPU_2 = {"name": "gpu-2", "gpus": 2, "max_nodes": 4}
GPU_8 = {"name": "gpu-8", "gpus": 8, "max_nodes": 1}


def _config(node_types=(), replicas=1, device="gpu", **engine):
    model = {"name": "m", "source": "x", "replicas": replicas, "engine": engine}
    return parse_config({"models": [model], "cluster": {"device": device, "node_types": list(node_types)}})


def _plan(node_types=(), device="gpu", **engine):
    config = _config(node_types, device=device, **engine)
    return plan_replica(config.models[0], device, config.cluster.node_types)


def test_cpu_replica_reserves_a_cpu_per_rank_and_no_placement_group():
    plan = _plan(device="cpu", tensor_parallel_size=2)
    assert plan.deployment_options() == {"ray_actor_options": {"num_cpus": 2}}


def test_one_gpu_replica_needs_no_placement_group():
    assert _plan().deployment_options() == {"ray_actor_options": {"num_cpus": 1, "num_gpus": 1}}


def test_replica_that_fits_a_node_is_pinned_to_one():
    plan = _plan([GPU_2, GPU_8], tensor_parallel_size=4)
    options = plan.deployment_options()
    assert options["placement_group_bundles"] == [{"CPU": 1, "GPU": 1}, {"GPU": 1}, {"GPU": 1}, {"GPU": 1}]
    assert options["placement_group_strategy"] == "STRICT_PACK"
    assert options["ray_actor_options"] == {"num_cpus": 1}
    assert "gpu-8" in plan.reason


def test_replica_larger_than_any_node_packs_its_stages_across_nodes():
    plan = _plan([GPU_2], tensor_parallel_size=2, pipeline_parallel_size=2)
    assert plan.strategy == "PACK"
    assert plan.stages == ((0, 1), (2, 3))
    assert "2+ gpu-2 nodes" in plan.reason


def test_unknown_node_shapes_pack_and_strategy_can_be_set():
    assert _plan(tensor_parallel_size=2).strategy == "PACK"
    config = parse_config({"models": [{"name": "m", "source": "x", "engine": {"tensor_parallel_size": 2}, "placement": {"strategy": "SPREAD"}}]})
    assert plan_replica(config.models[0], "gpu").strategy == "SPREAD"


@pytest.mark.parametrize(
    ("engine", "replicas", "field"),
    [
        ({"tensor_parallel_size": 4}, 1, "models.0.engine.tensor_parallel_size"),
        ({"tensor_parallel_size": 2, "pipeline_parallel_size": 8}, 1, "models.0.engine.pipeline_parallel_size"),
        ({"tensor_parallel_size": 2}, 5, "models.0.replicas"),
    ],
)
def test_config_that_can_never_fit_is_refused_naming_the_field(engine, replicas, field):
    with pytest.raises(ConfigError, match=rf"{field}: .*\(got \d+\)"):
        _config([GPU_2], replicas, **engine)


def test_autoscaled_model_must_fit_its_floor_not_its_ceiling():
    model = {"name": "m", "source": "x", "engine": {"tensor_parallel_size": 2}}
    fits = parse_config({"models": [model | {"autoscaling": {"min_replicas": 1, "max_replicas": 9}}], "cluster": {"node_types": [GPU_2]}})
    assert fits.models[0].autoscaling.max_replicas == 9
    with pytest.raises(ConfigError, match=r"models.0.autoscaling.min_replicas: at most 4 replicas .* \(got 5\)"):
        parse_config({"models": [model | {"autoscaling": {"min_replicas": 5, "max_replicas": 9}}], "cluster": {"node_types": [GPU_2]}})


def test_strict_pack_that_no_node_holds_is_refused():
    data = {"models": [{"name": "m", "source": "x", "engine": {"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
                        "placement": {"strategy": "STRICT_PACK"}}], "cluster": {"node_types": [GPU_2]}}
    with pytest.raises(ConfigError, match=r"models.0.placement.strategy: puts all 4 GPUs .* \(got 'STRICT_PACK'\)"):
        parse_config(data)


def test_models_together_may_not_exceed_the_cluster():
    models = [{"name": name, "source": "x", "replicas": 2, "engine": {"tensor_parallel_size": 2}} for name in ("a", "b", "c")]
    with pytest.raises(ConfigError, match=r"models: the replicas need 12 GPUs in all.*at most 8"):
        parse_config({"models": models, "cluster": {"node_types": [GPU_2]}})


def test_what_fits_loads_and_checks_need_known_gpu_nodes():
    assert _config([GPU_2], 2, tensor_parallel_size=2, pipeline_parallel_size=2).models[0].replicas == 2
    assert _config([], 9, tensor_parallel_size=16).models[0].replicas == 9
    assert _config([GPU_2], 1, device="cpu", tensor_parallel_size=4).models[0].engine.world_size == 4


def test_node_types_are_validated():
    with pytest.raises(ConfigError, match="cluster.node_types: .*unique"):
        _config([GPU_2, GPU_2])
    with pytest.raises(ConfigError, match=r"cluster.node_types.0.gpus"):
        _config([GPU_2 | {"gpus": 0}])


def test_overrides_are_checked_against_the_cluster_too():
    config = _config([GPU_2])
    with pytest.raises(ConfigError, match="models.0.engine.tensor_parallel_size"):
        apply_overrides(config, {"models.0.engine.tensor_parallel_size": 4})


def test_serve_tp_and_pp_flags_set_every_models_parallelism():
    config = parse_config({"models": [{"name": "a", "source": "x"}, {"name": "b", "source": "y"}]})
    args = _parser().parse_args(["serve", "--tp", "2", "--pp", "3"])
    updated = apply_overrides(config, serve_overrides(config, args))
    assert [(m.engine.tensor_parallel_size, m.engine.pipeline_parallel_size) for m in updated.models] == [(2, 3), (2, 3)]


NODES = [NodeResources("a", {"CPU": 4, "GPU": 2}), NodeResources("b", {"CPU": 4, "GPU": 2}),
         NodeResources("dead", {"CPU": 4, "GPU": 8}, alive=False)]
BUNDLES_4 = [{"CPU": 1, "GPU": 1}, {"GPU": 1}, {"GPU": 1}, {"GPU": 1}]


@pytest.mark.parametrize(
    ("bundles", "strategy", "reason"),
    [
        (BUNDLES_4, "STRICT_PACK", "needs GPU 4, CPU 1 on one node (STRICT_PACK); the most any node has is GPU 2, CPU 4"),
        ([{"CPU": 1, "GPU": 3}], "PACK", "bundle 0 (GPU 3, CPU 1) fits no node; the most any node has is GPU 2, CPU 4"),
        (BUNDLES_4 + [{"GPU": 1}], "PACK", "needs GPU 5, CPU 1 in all; the cluster has GPU 4, CPU 8"),
        (BUNDLES_4, "STRICT_SPREAD", "needs 4 distinct nodes (STRICT_SPREAD); the cluster has 2"),
        (BUNDLES_4, "PACK", None),
    ],
)
def test_unfit_reason_says_what_no_live_node_has(bundles, strategy, reason):
    assert unfit_reason(bundles, strategy, NODES) == reason


def test_cpu_ranks_get_their_own_cores():
    model = _config(device="cpu", tensor_parallel_size=2).models[0]
    assert cpu_threads_bind(model, [0, 1]) == "0|1"
    assert cpu_threads_bind(model, list(range(9))) == "0,1,2,3|4,5,6,7"
    with pytest.raises(ConfigError, match=r"models\[m\].engine: 2 CPU ranks"):
        cpu_threads_bind(model, [3])
