"""API keys → tenants and tenant cache salts, without Ray."""

import pytest

from kaon.config import AuthConfig, ConfigError, parse_config
from kaon.deployments.auth import Unauthorized, api_keys, key_digest, new_api_key

ALPHA_KEY, BETA_KEY = "sk-alpha", "sk-beta"
AUTH = AuthConfig(api_keys=[
    {"tenant": "alpha", "key_sha256": key_digest(ALPHA_KEY)},
    {"tenant": "beta", "key_env": "BETA_KEY"},
])


def keys():
    return api_keys(AUTH, {"BETA_KEY": BETA_KEY})


def test_no_keys_means_an_open_api():
    assert api_keys(AuthConfig(), {}) is None


def test_bearer_keys_name_their_tenant():
    table = keys()
    assert table.tenant(f"Bearer {ALPHA_KEY}") == "alpha"
    assert table.tenant(f"bearer {BETA_KEY} ") == "beta"


@pytest.mark.parametrize("header", [None, "", "Bearer ", f"Basic {ALPHA_KEY}", ALPHA_KEY, "Bearer sk-unknown"])
def test_missing_or_unknown_keys_are_refused(header):
    with pytest.raises(Unauthorized):
        keys().tenant(header)


def test_a_key_from_an_unset_variable_fails_naming_the_field():
    with pytest.raises(ConfigError, match=r"auth.api_keys.1.key_env: environment variable 'BETA_KEY' is not set"):
        api_keys(AUTH, {})


def test_each_entry_needs_exactly_one_key_source():
    for entry in ({"tenant": "a"}, {"tenant": "a", "key_sha256": "0" * 64, "key_env": "K"}):
        with pytest.raises(ConfigError, match="auth.api_keys.0: Value error, give exactly one of key_sha256 or key_env"):
            parse_config({"models": [{"name": "m", "source": "s"}], "auth": {"api_keys": [entry]}})
    with pytest.raises(ConfigError, match="auth.api_keys.0.key_sha256"):
        parse_config({"models": [{"name": "m", "source": "s"}], "auth": {"api_keys": [{"tenant": "a", "key_sha256": "abc"}]}})


def test_tenants_never_share_a_salt_whatever_salt_the_client_sends():
    table = keys()
    assert table.cache_salt("alpha", None) == table.cache_salt("alpha", None)
    assert table.cache_salt("alpha", None) != table.cache_salt("beta", None)
    assert table.cache_salt("alpha", "x") != table.cache_salt("alpha", None)
    # a client of beta cannot pick a salt that lands in alpha's cache
    assert table.cache_salt("beta", table.cache_salt("alpha", None)) != table.cache_salt("alpha", None)


def test_each_deployment_draws_its_own_secret():
    assert keys().cache_salt("alpha", None) != keys().cache_salt("alpha", None)


def test_generated_keys_are_long_and_distinct():
    first, second = new_api_key(), new_api_key()
    assert first != second and first.startswith("sk-kaon-") and len(first) > 40
