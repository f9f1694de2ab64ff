"""The path Kubernetes takes (KubeRay's serveConfigV2) and `serve deploy` users take: the file
`kaon serve-config` prints, deployed by Ray's own `serve deploy` CLI through the dashboard onto
a Ray cluster kaon did not start, builds kaon with `app_builder` on the cluster and serves
the same OpenAI API with real vLLM.

The module starts its own Ray head and stops it at its end; it runs (files in name order)
after the autoscaling module has stopped its cluster and before the session's kaon starts.
"""

import os
import subprocess
import sys
import time

import openai
import pytest
import yaml

from kaon.deployments.serve_env import with_serve_env
from tests.conftest import free_port
from tests.e2e.conftest import kaon_command

pytestmark = pytest.mark.e2e

READY_TIMEOUT_S = 600


def _ray(*args: str, env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def _serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray.serve.scripts", *args], env=env, capture_output=True, text=True, timeout=120)


def _app_status(env: dict[str, str], dashboard: str) -> str | None:
    status = yaml.safe_load(_serve("status", "--address", dashboard, env=env).stdout or "{}") or {}
    return (status.get("applications") or {}).get("kaon", {}).get("status")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The OpenAI base URL of kaon deployed from its Serve config file."""
    workdir = tmp_path_factory.mktemp("serve-deploy")
    # Ray 2.60's dashboard takes requests only with the cluster's token (~/.ray/auth_token).
    env = with_serve_env(dict(os.environ, KAON_CACHE_DIR=str(workdir / "cache"), RAY_AUTH_MODE="token"))
    port, dashboard_port = free_port(), free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    head = _ray("start", "--head", "--num-cpus=8", "--disable-usage-stats", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard_port}", env=env)
    assert head.returncode == 0, head.stdout + head.stderr
    try:
        printed = subprocess.run([*kaon_command(), "serve-config", "--set", "models.0.replicas=1", "--set", f"http.port={port}"],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert printed.returncode == 0, printed.stderr
        (workdir / "serve.yaml").write_text(printed.stdout)
        deploy = _serve("deploy", str(workdir / "serve.yaml"), "--address", dashboard, env=env)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        started, status = time.monotonic(), None
        while status != "RUNNING" and time.monotonic() - started < READY_TIMEOUT_S:
            time.sleep(2)
            status = _app_status(env, dashboard)
            assert status != "DEPLOY_FAILED", _serve("status", "--address", dashboard, env=env).stdout
        assert status == "RUNNING", f"application kaon is {status} after {READY_TIMEOUT_S} s"
        print(f"\nserve deploy of `kaon serve-config`: running in {time.monotonic() - started:.1f} s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:  # Serve first: `ray stop` alone leaves vLLM's engine processes and HAProxy running
        _serve("shutdown", "--yes", "--address", dashboard, env=env)
        _ray("stop", env=env)


def test_the_deployed_config_serves_completions_and_chat_streams(deployed):
    client = openai.OpenAI(base_url=deployed, api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["kaon-tiny"]
    reply = client.completions.create(model="kaon-tiny", prompt="The city", max_tokens=8, extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 8
    stream = client.chat.completions.create(model="kaon-tiny", messages=[{"role": "user", "content": "Rivers?"}],
                                            max_tokens=6, stream=True, extra_body={"ignore_eos": True})
    assert sum(bool(chunk.choices and chunk.choices[0].delta.content) for chunk in stream) >= 1


def test_the_deployed_config_answers_a_bad_parameter_with_a_400(deployed):
    client = openai.OpenAI(base_url=deployed, api_key="unused", max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="kaon-tiny", prompt="The city", max_tokens=8, temperature=-1)
    assert caught.value.body["param"] == "temperature"
