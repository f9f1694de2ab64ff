"""A real Prometheus server (Debian's `prometheus`) for the metrics tests, started from
kaon's shipped scrape config with the discovery file and interval a test needs."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "monitoring" / "prometheus.yml"


class PrometheusServer:
    def __init__(self, workdir: Path, port: int, discovery_file: str, scrape_interval_s: float = 1.0):
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("the `prometheus` binary is missing: `make install` installs Debian's package")
        config = yaml.safe_load(SHIPPED_CONFIG.read_text())
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = f"{scrape_interval_s:g}s"
        config["scrape_configs"][0]["file_sd_configs"][0]["files"] = [discovery_file]
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(workdir / "prometheus.log", "w")
        self._process = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._process.returncode}; see {self._log.name}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prometheus not ready after {timeout_s:.0f} s")

    def query(self, expr: str) -> dict[tuple, float]:
        """An instant query → {label values (sorted by name): value}."""
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        if body["status"] != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in body["data"]["result"]}

    def wait_for(self, expr: str, timeout_s: float = 90.0) -> dict[tuple, float]:
        """Poll until the query returns a non-empty result (Ray exports metrics every few seconds)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(1.0)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=30)
        self._log.close()
