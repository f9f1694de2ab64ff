"""kaon's one validated configuration: models, engines, replicas, HTTP and the Ray cluster.

Loaded from YAML (``load_config``) with CLI overrides applied on top (``apply_overrides``).
Every model is a pydantic model with ``extra="forbid"`` so a misspelt key fails at load,
and every error message names the field path and the offending value.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kaon.cluster.placement import fit_errors

TINY_MODEL_SCHEME = "kaon-tiny:"
"""A model ``source`` of ``kaon-tiny:tiny`` or ``kaon-tiny:bench`` means the generated model."""


class ConfigError(ValueError):
    """A configuration that cannot be served; the message names the field and value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineConfig(_Strict):
    """vLLM engine settings for one model; mapped onto vLLM's own engine arguments."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = Field(default=None, gt=0)
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    quantization: str | None = None
    enable_prefix_caching: bool = True
    block_size: int | None = Field(default=None, gt=0)
    max_num_seqs: int = Field(default=64, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    enforce_eager: bool = True
    seed: int = 0
    kv_cache_space_gib: int = Field(default=1, ge=1, description="CPU only: VLLM_CPU_KVCACHE_SPACE (whole GiB)")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="GPU only")
    extra_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Any further vLLM engine/frontend argument, by its `vllm serve` name "
        "with underscores (e.g. {'max_logprobs': 10}).",
    )

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


class RoutingConfig(_Strict):
    """How the handles to a model pick a replica (a policy from ``kaon.routing``)."""

    policy: Literal["prefix_load", "round_robin", "power_of_two"] = "prefix_load"
    seed: int = 0
    block_size_tokens: int | None = Field(
        default=None, gt=0, description="KV block size for prefix keys (default: engine.block_size, else vLLM's: 128 on CPU, 16 on GPU)"
    )
    prefill_tokens_per_s: float = Field(default=2_000.0, gt=0, description="prefix_load: a replica's prefill rate")
    decode_cost_tokens: float = Field(default=32.0, ge=0, description="prefix_load: cost of each busy request")
    step_overhead_tokens: float = Field(
        default=0.0, ge=0, description="prefix_load: fixed cost of the engine step that prefills a routed request "
        "(step base time × prefill_tokens_per_s); a request routed right behind it waits for it too"
    )
    spill_slack_requests: int = Field(default=32, ge=0, description="prefix_load: requests above the least-loaded replica before a spill")
    spill_ratio: float = Field(default=1.0, ge=0, description="prefix_load: ... or this fraction of the least-loaded replica's load, if larger")
    index_capacity_blocks: int = Field(default=100_000, ge=1, description="prefix index entries per replica")
    index_ttl_s: float = Field(default=600.0, gt=0)
    stats_period_s: float = Field(default=1.0, gt=0, description="how often replicas push engine stats to the routers")
    kv_events: bool = Field(
        default=True, description="prefix_load: feed the prefix index from vLLM's KV-cache events (precise mode); "
        "off: approximate index only"
    )
    events_gap_ttl_s: float = Field(
        default=30.0, gt=0, description="precise mode: how long a routed request's blocks count as cached before the engine reports them"
    )
    events_silence_timeout_s: float = Field(
        default=30.0, gt=0, description="precise mode: fall back to approximate when a replica reports no stored blocks this long after it had to"
    )


class PlacementConfig(_Strict):
    """Where a multi-GPU replica's workers go (one Ray placement group per replica)."""

    strategy: Literal["auto", "STRICT_PACK", "PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        default="auto", description="auto: STRICT_PACK when a replica fits one node of cluster.node_types, else PACK"
    )


class AutoscalingConfig(_Strict):
    """Queue-depth autoscaling of one model's replicas (``kaon.autoscaling``), run by Ray
    Serve's controller. Without this section ``models[].replicas`` is a fixed count."""

    min_replicas: int = Field(default=1, ge=0, description="0: scale to zero after scale_to_zero_after_s without requests")
    max_replicas: int = Field(ge=1)
    initial_replicas: int | None = Field(default=None, ge=0, description="default: models[].replicas, kept within min..max")
    target_queue_depth_per_replica: float = Field(
        default=2.0, ge=0, description="requests waiting (in the engines and at the handles) per serving replica before scaling up"
    )
    upscale_stabilization_s: float = Field(default=10.0, ge=0, description="a scale-up must have been wanted this long")
    downscale_stabilization_s: float = Field(
        default=300.0, ge=0, description="scale down only to the highest count wanted over this long"
    )
    panic_threshold: float | None = Field(
        default=2.0, gt=1, description="scale up at once when the count wanted reaches this multiple of the current one (null: never)"
    )
    scale_to_zero_after_s: float = Field(default=600.0, gt=0, description="min_replicas 0: idle time before the last replica goes")
    replica_start_s: float = Field(
        default=60.0, gt=0, description="expected time from asking for a replica to it serving; a backlog that would take "
        "longer than this to drain adds replicas"
    )
    replica_throughput_per_s: float | None = Field(
        default=None, gt=0, description="expected requests/s of one busy replica (e.g. from kaon bench): sizes a burst "
        "before kaon has measured it; null: the first burst waits for the measurement"
    )
    metrics_window_s: float = Field(
        default=10.0, gt=0, description="throughput and arrival rates are measured over this window (Serve's look_back_period_s)"
    )
    metrics_interval_s: float = Field(
        default=1.0, gt=0, description="how often replicas and handles push their figures to the controller"
    )

    @model_validator(mode="after")
    def _consistent(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(f"initial_replicas ({self.initial_replicas}) must lie within min_replicas..max_replicas")
        if self.metrics_window_s <= self.metrics_interval_s:
            raise ValueError(f"metrics_window_s ({self.metrics_window_s}) must exceed metrics_interval_s ({self.metrics_interval_s})")
        return self

    def initial(self, replicas: int) -> int:
        """Replicas at deploy time: ``initial_replicas``, else ``replicas`` kept within the bounds."""
        if self.initial_replicas is not None:
            return self.initial_replicas
        return max(self.min_replicas, min(self.max_replicas, replicas))


class ModelConfig(_Strict):
    """One served model: its name in requests, where its weights are, how many replicas."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._\-/:]+$")
    source: str = Field(
        min_length=1,
        description="A Hugging Face hub id, a local path, or kaon-tiny:tiny / kaon-tiny:bench.",
    )
    replicas: int = Field(default=1, ge=0)
    max_ongoing_requests: int = Field(default=256, ge=1, description="Per replica, at the handle.")
    max_queued_requests: int = Field(
        default=1024, ge=-1, description="Requests waiting at the handles for a replica (-1: no bound)."
    )
    graceful_shutdown_timeout_s: float = Field(default=30.0, ge=0)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    autoscaling: AutoscalingConfig | None = Field(default=None, description="absent: `replicas` is a fixed count")

    @field_validator("source")
    @classmethod
    def _known_tiny_size(cls, source: str) -> str:
        if source.startswith(TINY_MODEL_SCHEME):
            size = source.removeprefix(TINY_MODEL_SCHEME)
            if size not in ("tiny", "bench"):
                raise ValueError(f"generated model size must be tiny or bench, got {size!r}")
        return source


class HttpConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)


class RouterConfig(_Strict):
    """The ingress deployment that serves the OpenAI API."""

    replicas: int = Field(default=1, ge=1)
    max_ongoing_requests: int = Field(default=1024, ge=1)


class NodeTypeConfig(_Strict):
    """A kind of GPU node replicas run on (a `ray up` worker type, a KubeRay worker group)."""

    name: str = Field(min_length=1)
    gpus: int = Field(ge=1, description="GPUs per node")
    max_nodes: int = Field(ge=1, description="the most nodes of this type the cluster grows to")


class ClusterConfig(_Strict):
    """Where to run: an existing Ray cluster (``address``) or a local one kaon starts."""

    address: str | None = None
    device: Literal["auto", "cpu", "gpu"] = "auto"
    num_cpus: int | None = Field(
        default=None,
        ge=1,
        description="Logical CPUs for a local Ray (default: enough for every replica).",
    )
    app_name: str = Field(default="kaon", min_length=1)
    node_types: list[NodeTypeConfig] = Field(
        default_factory=list,
        description="The GPU node types replicas may use; configs that can never fit them are refused (empty: unknown).",
    )

    @field_validator("node_types")
    @classmethod
    def _unique_node_type_names(cls, node_types: list[NodeTypeConfig]) -> list[NodeTypeConfig]:
        names = [node_type.name for node_type in node_types]
        if len(set(names)) < len(names):
            raise ValueError(f"node type names must be unique, got {names}")
        return node_types


class ApiKeyConfig(_Strict):
    """One API key of a tenant, given by its SHA-256 digest or by the environment variable
    that holds it where kaon deploys (`kaon api-key` makes a key and prints both forms)."""

    tenant: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._\-]+$")
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key_env: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeyConfig:
        if (self.key_sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of key_sha256 or key_env")
        return self


class AuthConfig(_Strict):
    """With keys, every /v1 request needs `Authorization: Bearer <key>` (else 401), and each
    tenant's prefix cache is isolated from the others'."""

    api_keys: list[ApiKeyConfig] = Field(default_factory=list)


class KaonConfig(_Strict):
    models: list[ModelConfig] = Field(min_length=1)
    router: RouterConfig = Field(default_factory=RouterConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _unique_model_names(self) -> KaonConfig:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique, repeated: {duplicates}")
        return self

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)


def deployment_name(model_name: str) -> str:
    """The Ray Serve deployment that serves a model (`kaon status`, Serve's dashboard)."""
    return "model-" + model_name.replace("/", "--").replace(":", "-")


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {field}: {item['msg']}{shown}")
    return "invalid kaon config:\n" + "\n".join(lines)


def parse_config(data: dict[str, Any]) -> KaonConfig:
    """Validate a config mapping; raise ``ConfigError`` naming each bad field and value."""
    try:
        config = KaonConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
    misfits = fit_errors(config)
    if misfits:
        raise ConfigError("invalid kaon config:\n" + "\n".join(f"  {e.field}: {e.message} (got {e.value!r})" for e in misfits))
    return config


def load_config(path: str | Path) -> KaonConfig:
    text = Path(path).read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return parse_config(data)


def apply_overrides(config: KaonConfig, overrides: dict[str, Any]) -> KaonConfig:
    """Set dotted paths (``models.0.replicas``, ``http.port``) and re-validate the whole config."""
    data = config.model_dump()
    for path, value in overrides.items():
        _set_path(data, path.split("."), value)
    return parse_config(data)


def _set_path(data: Any, parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        data = data[int(part)] if isinstance(data, list) else data.setdefault(part, {})
    last = parts[-1]
    if isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value


def default_config_path() -> Path:
    return Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml"


def resolve_device(setting: str) -> str:
    """``auto`` → ``cpu`` where vLLM's CPU build is installed or no NVIDIA driver is present."""
    if setting != "auto":
        return setting
    try:
        importlib.metadata.distribution("vllm-cpu")
        return "cpu"
    except importlib.metadata.PackageNotFoundError:
        return "gpu" if shutil.which("nvidia-smi") else "cpu"
