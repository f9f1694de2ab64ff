"""API keys → tenants, and each tenant's prefix-cache salt.

Keys are held only as SHA-256 digests. With keys configured, every request names its
tenant by its key, and kaon sets the request's ``cache_salt`` (vLLM's per-request prefix
cache isolation, which also enters the router's block hashes) to an HMAC of the tenant
under a secret drawn once per deployment. A tenant therefore never hits, nor can probe,
another tenant's cached blocks, even by sending a ``cache_salt`` of its own: the client's
salt only splits the tenant's own cache further.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from kaon.config import AuthConfig, ConfigError


class Unauthorized(Exception):
    """No key, or a key kaon does not know; the message says which."""


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return "sk-kaon-" + secrets.token_urlsafe(32)


@dataclass(slots=True, frozen=True)
class ApiKeys:
    """The key table the router checks; ``secret`` keys the tenants' cache salts."""

    tenants_by_digest: Mapping[str, str]
    secret: bytes

    def tenant(self, authorization: str | None) -> str:
        """The tenant of an ``Authorization: Bearer <key>`` header."""
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("Missing API key: send it as `Authorization: Bearer <key>`.")
        tenant = self.tenants_by_digest.get(key_digest(key.strip()))
        if tenant is None:
            raise Unauthorized("Incorrect API key provided.")
        return tenant

    def cache_salt(self, tenant: str, client_salt: str | None) -> str:
        message = tenant.encode() + b"\0" + (client_salt or "").encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()


def api_keys(config: AuthConfig, environ: Mapping[str, str]) -> ApiKeys | None:
    """The key table for a config (None: no keys, the API is open); keys named by
    ``key_env`` are read from ``environ`` where kaon deploys."""
    if not config.api_keys:
        return None
    table: dict[str, str] = {}
    for index, entry in enumerate(config.api_keys):
        digest = entry.key_sha256
        if entry.key_env is not None:
            key = environ.get(entry.key_env)
            if not key:
                raise ConfigError(f"auth.api_keys.{index}.key_env: environment variable {entry.key_env!r} is not set")
            digest = key_digest(key)
        table[digest] = entry.tenant
    return ApiKeys(table, secrets.token_bytes(32))
