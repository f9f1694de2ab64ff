"""The e2e tier: `kaon serve --detach` deploys real vLLM (CPU) replicas of the generated tiny
model on a local Ray, exactly as a user would; tests speak HTTP with the official client."""

import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import free_port

E2E_CONFIG = {
    "models": [
        {"name": "tiny", "source": "kaon-tiny:tiny", "replicas": 2,
         "engine": {"dtype": "float32", "max_model_len": 512, "kv_cache_space_gib": 1}},
        {"name": "tiny-b", "source": "kaon-tiny:tiny", "replicas": 1,
         "engine": {"dtype": "float32", "max_model_len": 1024, "kv_cache_space_gib": 1, "tensor_parallel_size": 2}},
    ],
    "cluster": {"device": "cpu"},
    "auth": {"api_keys": [{"tenant": "alpha", "key_env": "KAON_E2E_KEY_ALPHA"}, {"tenant": "beta", "key_env": "KAON_E2E_KEY_BETA"}]},
}
API_KEYS = {"alpha": "sk-e2e-alpha", "beta": "sk-e2e-beta"}
"""Every request needs a tenant's key: the tests speak as tenant alpha unless they say otherwise."""


def kaon_command() -> list[str]:
    script = shutil.which("kaon")
    return [script] if script else [sys.executable, "-m", "kaon.cli"]


class KaonServer:
    def __init__(self, url: str, env: dict[str, str]):
        self.url = url
        self.env = env
        self.api_key = API_KEYS["alpha"]
        self.headers = {"Authorization": f"Bearer {self.api_key}"}

    def cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*kaon_command(), *args], env=self.env, capture_output=True, text=True, timeout=timeout_s)


def start_kaon(workdir, config: dict, **env: str) -> KaonServer:
    """`kaon serve --detach` of ``config`` on a free port, its model cache in ``workdir``."""
    config_path = workdir / "kaon.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    server = KaonServer(f"http://127.0.0.1:{port}", dict(os.environ, KAON_CACHE_DIR=str(workdir / "cache"), **env))
    started = time.monotonic()
    result = server.cli("serve", "--config", str(config_path), "--port", str(port), "--detach", timeout_s=900)
    print(f"\nkaon serve --detach: ready in {time.monotonic() - started:.1f} s\n{result.stdout}")
    if result.returncode != 0:
        server.cli("shutdown")
        pytest.fail(f"kaon serve failed:\n{result.stdout}\n{result.stderr}")
    return server


@pytest.fixture(scope="session")
def kaon_server(tmp_path_factory):
    server = start_kaon(tmp_path_factory.mktemp("kaon"), E2E_CONFIG,
                        KAON_E2E_KEY_ALPHA=API_KEYS["alpha"], KAON_E2E_KEY_BETA=API_KEYS["beta"])
    yield server
    down = server.cli("shutdown")
    assert down.returncode == 0, down.stderr
