"""API keys on a real Ray Serve with the fake engine: 401 in OpenAI shape before anything
else is looked at, keys from a digest or the environment, /health open."""

import httpx
import openai
import pytest
from ray import serve

from kaon.config import parse_config
from kaon.deployments.app import build_app
from kaon.deployments.auth import key_digest

pytestmark = pytest.mark.serve

ALPHA_KEY, BETA_KEY = "sk-test-alpha", "sk-test-beta"
CONFIG = {
    "models": [{"name": "alpha", "source": "kaon-tiny:tiny", "replicas": 1}],
    "auth": {"api_keys": [
        {"tenant": "alpha", "key_sha256": key_digest(ALPHA_KEY)},
        {"tenant": "beta", "key_env": "KAON_TEST_BETA_KEY"},
    ]},
}


@pytest.fixture(scope="module")
def base_url(ray_cluster, http_port, fake_engine):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KAON_TEST_BETA_KEY", BETA_KEY)
        app = build_app(parse_config(CONFIG), "cpu", fake_engine(0.0))
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    serve.run(app, name="kaon-auth", route_prefix="/")
    yield f"http://127.0.0.1:{http_port}"
    serve.delete("kaon-auth")


def client(base_url, key):
    return openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("key", [ALPHA_KEY, BETA_KEY])
def test_each_tenants_key_is_served(base_url, key):
    reply = client(base_url, key).chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert reply.usage.completion_tokens == 3
    assert [m.id for m in client(base_url, key).models.list()] == ["alpha"]


def test_a_wrong_key_is_401_in_openai_shape(base_url):
    with pytest.raises(openai.AuthenticationError) as caught:
        client(base_url, "sk-wrong").completions.create(model="alpha", prompt="x", max_tokens=2)
    assert caught.value.body == {"message": "Incorrect API key provided.", "type": "UnauthorizedError", "param": None, "code": 401}
    assert caught.value.response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/v1/completions"])
def test_no_key_is_401_even_for_a_bad_body(base_url, path):
    response = httpx.request("GET" if path == "/v1/models" else "POST", base_url + path, json={"model": "alpha", "max_tokens": "many"})
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith("Missing API key")


def test_health_needs_no_key(base_url):
    assert httpx.get(base_url + "/health").status_code == 200
