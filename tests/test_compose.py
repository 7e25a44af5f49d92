"""docker-compose.yml cannot run here (no Docker engine): check it parses and is complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_names_the_stack() -> None:
    services = _compose()["services"]
    assert {"kafka", "postgres", "projector", "api"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["image"] == "postgres:17"
    assert services["projector"]["command"] == ["run"]
    assert services["api"]["command"][0] == "serve"


def test_compose_health_checks_and_start_order() -> None:
    services = _compose()["services"]
    for name in ("kafka", "postgres", "projector", "api"):
        assert "test" in services[name]["healthcheck"], name
    migrate = services["migrate"]["depends_on"]
    assert migrate["postgres"]["condition"] == "service_healthy"
    assert migrate["kafka"]["condition"] == "service_healthy"
    for name in ("projector", "api"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["build"] == "."
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_dockerfile_runs_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["projector"]' in text
    assert "USER projector" in text
    # The decoder needs the contracts at run time.
    assert "PROJECTOR_SCHEMA_DIR=/opt/projector/schemas" in text
    assert "COPY schemas /opt/projector/schemas" in text
