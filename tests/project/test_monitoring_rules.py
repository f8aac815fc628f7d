"""The Prometheus alert rules and the Grafana dashboard that ship with the compose stack
(deploy/prometheus, deploy/grafana): promtool (Debian's `prometheus` package, which
`make test` installs) checks the config and rules and runs their unit tests, and every
metric they name is one the service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import serving.metrics  # noqa: F401  # registers the service's metrics
from core.config import PROJECT_ROOT

PROMETHEUS = PROJECT_ROOT / "deploy" / "prometheus"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "prepiq-serving.json"
METRIC = re.compile(r"\b(prepiq_[a-z_]+)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: install Debian's prometheus (make test does, as root)")
    return subprocess.run(
        [tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> set[str]:
    """Sample names the service's metrics give, by each metric's type (a counter's
    `_total`, a histogram's `_bucket`, `_count` and `_sum`, a gauge's own name)."""
    return {
        f"{metric.name}{suffix}"
        for metric in REGISTRY.collect()
        if metric.name.startswith("prepiq_")
        for suffix in SUFFIXES[metric.type]
    }


def rules() -> list[dict[str, object]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_config_and_the_rules() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout + done.stderr


def test_the_rules_fire_past_their_budgets_and_stay_quiet_under_them() -> None:
    done = promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_the_rules_and_the_dashboard_name_only_exported_metrics() -> None:
    exprs = [str(rule["expr"]) for rule in rules()]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    assert named, exprs
    assert named <= exported(), named - exported()
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts >= {"PrepIQServingErrorRate", "PrepIQServingLatencyP99", "PrepIQServingDown"}


def test_the_dashboard_reads_the_provisioned_data_source() -> None:
    source = yaml.safe_load(
        (PROJECT_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uids = {s["uid"] for s in source["datasources"]}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {p["datasource"]["uid"] for p in panels} == uids == {"prometheus"}
    assert len({p["id"] for p in panels}) == len(panels)
    provider = yaml.safe_load(
        Path(PROJECT_ROOT / "deploy/grafana/provisioning/dashboards/prepiq.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
