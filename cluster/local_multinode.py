"""A multi-node Ray cluster on one machine: a head and worker raylets with fake GPUs and labels.

Each node is a ``ray start --block`` process in a process group of its own, so stopping
one node (or crashing it with SIGKILL) touches nothing else on the machine, including any
other Ray. Placement across nodes is then testable without GPUs: Ray schedules the fake
``GPU`` resources exactly as real ones (tests/serve/test_multinode.py deploys GPU-planned
replicas of the fake engine). The head has no GPUs, as on a `ray up` cluster.

    python -m kaon.cluster.local_multinode up --workers 3 --gpus-per-worker 2
    export RAY_AUTH_MODE=token                # clients of an explicit address need Ray's token auth
    kaon serve --address 127.0.0.1:6390 --config configs/tiny-cpu.yaml --detach   # real vLLM on CPU
    kaon status --address 127.0.0.1:6390      # which node each replica landed on
    python -m kaon.cluster.local_multinode kill worker-1    # crash a node
    python -m kaon.cluster.local_multinode down
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kaon.engine.model_source import cache_dir

AUTH_ENV = {"RAY_AUTH_MODE": "token"}
"""Every node and client runs with Ray's token auth (the token in ~/.ray/auth_token); Ray
enables it on its own only for a local head and for clients of ``--address auto``."""
NODE_TYPE_LABEL = "kaon.io/node-type"
"""The label every node carries with its node type, as the `ray up` YAMLs set it."""
NODE_NAME_LABEL = "kaon.io/local-node"
"""This script's name of the node (head, worker-1, …), the name `kill` takes."""
DEFAULT_PORT = 6390
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass(slots=True, frozen=True)
class NodeSpec:
    name: str
    num_cpus: int
    num_gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)


def default_nodes(workers: int, gpus_per_worker: int, cpus_per_worker: int, head_cpus: int = 4) -> list[NodeSpec]:
    """A head with no GPUs and ``workers`` identical GPU nodes named worker-1, worker-2, …"""
    node_type = f"gpu-{gpus_per_worker}"
    head = NodeSpec("head", head_cpus, 0, {NODE_TYPE_LABEL: "head"})
    return [head] + [NodeSpec(f"worker-{i}", cpus_per_worker, gpus_per_worker, {NODE_TYPE_LABEL: node_type}) for i in range(1, workers + 1)]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalMultinode:
    """Starts, crashes and stops the nodes it launched; never any other Ray process."""

    def __init__(self, nodes: list[NodeSpec], port: int = DEFAULT_PORT, log_dir: Path | None = None, dashboard: bool = False):
        self.nodes = nodes
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.log_dir = log_dir or cache_dir() / "local-multinode"
        self.dashboard = dashboard
        self.pids: dict[str, int] = {}

    def start(self) -> None:
        """Launch the head, connect to it as a driver, then add the workers one by one (several
        raylets registering at once time out on a small machine); returns with all alive."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"], capture_output=True, check=True)
        head, *workers = self.nodes
        self.pids[head.name] = self._launch(head, head=True)
        self._connect()
        for count, node in enumerate(workers, start=2):
            self.pids[node.name] = self._launch(node, head=False)
            self.wait_for_nodes(count)

    def _launch(self, node: NodeSpec, head: bool) -> int:
        command = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
            f"--num-cpus={node.num_cpus}", f"--num-gpus={node.num_gpus}",
            "--labels=" + ",".join(f"{key}={value}" for key, value in (node.labels | {NODE_NAME_LABEL: node.name}).items()),
            "--object-store-memory=100000000", "--min-worker-port=0", "--max-worker-port=0",
            f"--dashboard-agent-listen-port={_free_port()}",
        ]
        if head:
            command += ["--head", f"--port={self.port}", f"--ray-client-server-port={_free_port()}", "--dashboard-host=127.0.0.1"]
            command += ["--include-dashboard=true", "--dashboard-port=8265"] if self.dashboard else ["--include-dashboard=false"]
        else:
            command += [f"--address={self.address}"]
        log = open(self.log_dir / f"{node.name}.log", "w")
        environment = dict(os.environ, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", **AUTH_ENV)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=environment)
        if head:
            _wait_for_port(self.port, process)
        return process.pid

    def _connect(self) -> None:
        """Make this process a driver of the cluster, with token auth on.

        Ray reads ``RAY_AUTH_MODE`` once per process; for an explicit address it never turns
        token auth on by itself, so this does what Ray's own ``ray.init()`` does for a new
        local cluster (set the variable and reload Ray's config).
        """
        import ray
        from ray._private.authentication.authentication_token_setup import _enable_token_auth

        _enable_token_auth()
        ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)

    def wait_for_nodes(self, count: int, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Block until ``count`` nodes are alive."""
        import ray

        deadline = time.monotonic() + timeout_s
        while sum(node["Alive"] for node in ray.nodes()) != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Ray nodes expected alive after {timeout_s:.0f} s; logs in {self.log_dir}")
            time.sleep(0.5)

    def kill(self, name: str) -> None:
        """Crash one node: SIGKILL its whole process group (raylet, workers, agents)."""
        _signal_group(self.pids.pop(name), signal.SIGKILL)

    def stop(self) -> None:
        """Stop every node this object started, workers first, the head last: `ray start`
        stops its node's processes on SIGTERM; whatever is left of its group is killed."""
        for name in reversed(list(self.pids)):
            pid = self.pids.pop(name)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            _wait_gone(pid, STOP_TIMEOUT_S)
            _signal_group(pid, signal.SIGKILL)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"port": self.port, "pids": self.pids, "nodes": [asdict(n) for n in self.nodes]}))

    @classmethod
    def load(cls, path: Path) -> LocalMultinode:
        state = json.loads(path.read_text())
        cluster = cls([NodeSpec(**node) for node in state["nodes"]], state["port"])
        cluster.pids = state["pids"]
        return cluster


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Ray head exited with {process.returncode}; see its log")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the Ray head did not listen on port {port} within {timeout_s:.0f} s")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout_s: float) -> None:
    """Until ``pid`` has exited (reaped if it is our child) or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.2)


def _state_file() -> Path:
    return cache_dir() / "local-multinode.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kaon.cluster.local_multinode", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a head and GPU worker raylets on this machine")
    up.add_argument("--workers", type=int, default=3)
    up.add_argument("--gpus-per-worker", type=int, default=2)
    up.add_argument("--cpus-per-worker", type=int, default=4)
    up.add_argument("--port", type=int, default=DEFAULT_PORT)
    up.add_argument("--dashboard", action="store_true", help="the Ray dashboard on 127.0.0.1:8265")
    kill = commands.add_parser("kill", help="crash one node (SIGKILL its processes)")
    kill.add_argument("node")
    commands.add_parser("down", help="stop every node `up` started")
    args = parser.parse_args(argv)

    if args.command == "up":
        if _state_file().exists():
            print(f"a local multi-node cluster is already up ({_state_file()}); run `down` first", file=sys.stderr)
            return 1
        import ray

        cluster = LocalMultinode(default_nodes(args.workers, args.gpus_per_worker, args.cpus_per_worker), args.port, dashboard=args.dashboard)
        try:
            cluster.start()
        except Exception:
            cluster.stop()
            raise
        finally:
            ray.shutdown()
        cluster.save(_state_file())
        print(f"{len(cluster.nodes)} nodes up at {cluster.address} (logs: {cluster.log_dir}); its clients need "
              + " ".join(f"{key}={value}" for key, value in AUTH_ENV.items()))
        return 0
    if not _state_file().exists():
        print("no local multi-node cluster is up", file=sys.stderr)
        return 1
    cluster = LocalMultinode.load(_state_file())
    if args.command == "kill":
        cluster.kill(args.node)
        cluster.save(_state_file())
    else:
        cluster.stop()
        _state_file().unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
