"""Every metric the alert rules and the dashboard name is exported by the projector or the API."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from api.metrics import ApiMetrics
from projector.metrics import EngineMetrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# PromQL functions, keywords and label names are lowercase words too; metric
# names here all start with one of these.
_METRIC = re.compile(r"\b((?:projector|api|process)_[a-z0-9_]+)\b")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "summary": ("_sum", "_count"), "gauge": ("",), "unknown": ("",)}


def exported(registry: CollectorRegistry) -> set[str]:
    """The sample names Prometheus would scrape from ``registry`` (once labels have values)."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and dashboard panel target."""
    out = []
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            out.append((f"alert {rule['alert']}", rule["expr"]))
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "projector.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel.get('title')!r}", target["expr"]))
    return out


def test_the_deploy_files_name_metrics() -> None:
    named = {m for _, expr in expressions() for m in _METRIC.findall(expr)}
    assert {"api_graphql_requests_total", "api_graphql_request_seconds_bucket",
            "projector_consumer_lag"} <= named


@pytest.mark.parametrize(("where", "expr"), expressions())
def test_every_named_metric_is_exported(where: str, expr: str) -> None:
    available = exported(EngineMetrics(CollectorRegistry()).registry) | exported(ApiMetrics().registry)
    missing = sorted(set(_METRIC.findall(expr)) - available)
    assert not missing, f"{where} uses {missing}, which neither the projector nor the API exports"
