"""The shipped monitoring files: the Grafana dashboard is what its generator writes, and the
Prometheus config finds Ray's metrics endpoints. (Their queries run against a real
Prometheus in tests/e2e/test_tenants_and_metrics.py.)"""

import importlib.util
import json
import sys
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


def _generator():
    spec = importlib.util.spec_from_file_location("kaon_dashboard", MONITORING / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_dashboard_file_is_the_generators_output():
    shipped = json.loads((MONITORING / "grafana-kaon.json").read_text())
    assert shipped == _generator().dashboard(), "run `python monitoring/dashboard.py`"
    assert all(target["expr"] for panel in shipped["panels"] for target in panel["targets"])


def test_prometheus_scrapes_rays_discovered_endpoints():
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"] == [{"files": ["/tmp/ray/prom_metrics_service_discovery.json"]}]
