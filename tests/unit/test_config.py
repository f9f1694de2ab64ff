"""Config validation: bad config fails at load, naming the field and the value."""

import pytest

from kaon.cli import _parser, serve_overrides
from kaon.config import ConfigError, apply_overrides, default_config_path, load_config, parse_config

MINIMAL = {"models": [{"name": "m", "source": "kaon-tiny:tiny"}]}


def test_default_config_loads_two_tiny_replicas():
    config = load_config(default_config_path())
    assert [m.name for m in config.models] == ["kaon-tiny"]
    assert config.models[0].replicas == 2
    assert config.models[0].engine.enable_prefix_caching is True
    assert config.http.port == 8000


def test_gpu_example_config_loads():
    config = load_config(default_config_path().parent / "llama3-8b-tp2.yaml")
    assert config.models[0].engine.tensor_parallel_size == 2
    assert config.cluster.device == "gpu"


def test_defaults_fill_in():
    config = parse_config(MINIMAL)
    assert config.models[0].replicas == 1
    assert config.models[0].engine.world_size == 1
    assert config.router.replicas == 1


@pytest.mark.parametrize(
    ("data", "field", "value"),
    [
        ({"models": [{"name": "m", "source": "x", "replicas": -1}]}, "models.0.replicas", "-1"),
        ({"models": [{"name": "m", "source": "x", "engine": {"tensor_parallel_size": 0}}]}, "models.0.engine.tensor_parallel_size", "0"),
        ({"models": [{"name": "m", "source": "x", "engine": {"dtype": "int3"}}]}, "models.0.engine.dtype", "'int3'"),
        ({"models": [{"name": "m", "source": "x"}], "http": {"port": 70000}}, "http.port", "70000"),
        ({"models": [{"name": "m", "source": "kaon-tiny:huge"}]}, "models.0.source", "'kaon-tiny:huge'"),
        ({"models": [{"name": "m", "source": "x", "engine": {"gpu_memory_utilization": 1.5}}]}, "models.0.engine.gpu_memory_utilization", "1.5"),
    ],
)
def test_bad_values_name_field_and_value(data, field, value):
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert field in str(caught.value)
    assert value in str(caught.value)


def test_misspelt_key_is_refused():
    with pytest.raises(ConfigError, match="models.0.replcas"):
        parse_config({"models": [{"name": "m", "source": "x", "replcas": 2}]})


def test_no_models_is_refused():
    with pytest.raises(ConfigError, match="models"):
        parse_config({"models": []})


def test_duplicate_model_names_are_refused():
    with pytest.raises(ConfigError, match="unique"):
        parse_config({"models": [{"name": "m", "source": "x"}, {"name": "m", "source": "y"}]})


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("models: [\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_overrides_are_validated():
    config = parse_config(MINIMAL)
    assert apply_overrides(config, {"models.0.replicas": 3}).models[0].replicas == 3
    with pytest.raises(ConfigError, match="models.0.replicas"):
        apply_overrides(config, {"models.0.replicas": "many"})


def _serve_args(**values):
    """`kaon serve`'s parsed flags, every default from the real parser, ``values`` set."""
    args = _parser().parse_args(["serve"])
    vars(args).update(values)
    return args


def test_cli_flags_override_config():
    config = parse_config({"models": [{"name": "a", "source": "x"}, {"name": "b", "source": "y"}]})
    updated = apply_overrides(config, serve_overrides(config, _serve_args(replicas=4, port=9000, address="auto", router_policy="round_robin")))
    assert [m.replicas for m in updated.models] == [4, 4]
    assert [m.routing.policy for m in updated.models] == ["round_robin", "round_robin"]
    assert updated.http.port == 9000
    assert updated.cluster.address == "auto"


def test_cli_model_flag_replaces_models_keeping_engine_settings():
    config = parse_config({"models": [{"name": "a", "source": "x", "engine": {"max_model_len": 1024}}]})
    updated = apply_overrides(config, serve_overrides(config, _serve_args(model="org/other", replicas=2)))
    assert [(m.name, m.source, m.replicas) for m in updated.models] == [("org/other", "org/other", 2)]
    assert updated.models[0].engine.max_model_len == 1024


def test_set_flags_reach_any_field_and_are_validated():
    config = parse_config({"models": [{"name": "a", "source": "x"}]})
    args = _parser().parse_args(["serve", "--set", "router.replicas=2", "--set", "models.0.routing.kv_events=false"])
    updated = apply_overrides(config, serve_overrides(config, args))
    assert updated.router.replicas == 2 and updated.models[0].routing.kv_events is False
    with pytest.raises(ConfigError, match="router.replicas"):
        apply_overrides(config, serve_overrides(config, _parser().parse_args(["serve", "--set", "router.replicas=[1"])))
    with pytest.raises(ConfigError, match="expected PATH=VALUE"):
        serve_overrides(config, _parser().parse_args(["serve", "--set", "router.replicas"]))
