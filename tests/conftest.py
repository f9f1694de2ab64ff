"""Shared helpers for the Ray tiers: a free port and a Ray cluster of our own per module."""

import socket

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def http_port() -> int:
    return free_port()
