"""Reaching a Ray cluster: connect to a given address, or start (and later stop) a local one.

A local cluster is started with ``ray start --head`` rather than an in-process ``ray.init``
so that ``kaon serve --detach`` can return while the cluster keeps serving. Whether kaon
started it is recorded in ``$KAON_CACHE_DIR/local-cluster.json`` so ``kaon shutdown`` only
stops a Ray it owns.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import ray

from kaon.deployments.serve_env import with_serve_env
from kaon.engine.model_source import cache_dir

NAMESPACE = "kaon"


def _state_file() -> Path:
    return cache_dir() / "local-cluster.json"


def local_ray_running() -> bool:
    result = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status"], capture_output=True, text=True)
    return result.returncode == 0


def start_local_ray(num_cpus: int, dashboard_port: int = 8265) -> None:
    """Start a head node on this machine; its dashboard listens on 127.0.0.1 only."""
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
        f"--num-cpus={num_cpus}", "--disable-usage-stats",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=with_serve_env(os.environ))
    if result.returncode != 0:
        raise RuntimeError(f"`ray start --head` failed:\n{result.stdout}\n{result.stderr}")
    _state_file().parent.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps({"num_cpus": num_cpus}))


def started_by_kaon() -> bool:
    return _state_file().exists()


def stop_local_ray() -> None:
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop"], capture_output=True)
    _state_file().unlink(missing_ok=True)


def connect(address: str) -> None:
    ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)


def disconnect() -> None:
    """Leave the cluster and forget Serve's cached controller handle.

    Serve keeps that handle across ``ray.shutdown()`` and trusts it while the driver's job id
    is unchanged; job ids restart at 1 on a new cluster, so a process that connects to a
    second cluster (a test session, a notebook) would reuse the first cluster's dead
    controller ("Can't find actor").
    """
    from ray.serve import context

    ray.shutdown()
    context._disconnect()
