"""The deployment files name only settings that exist and probe the endpoints the relay serves."""

from __future__ import annotations

from pathlib import Path

import yaml

from relay.config import SETTINGS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KNOWN = {s.env for s in SETTINGS}


def test_kubernetes_manifests_use_known_settings_and_real_probes() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "relay.yaml").read_text())}
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= set(docs)
    assert set(docs["ConfigMap"]["data"]) | set(docs["Secret"]["stringData"]) <= KNOWN
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    metrics_port = docs["ConfigMap"]["data"]["RELAY_METRICS_LISTEN"].rsplit(":", 1)[1]
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == metrics_port
    assert {p["containerPort"] for p in container["ports"]} >= {8080, int(metrics_port)}
    assert all(p["targetPort"] != "metrics" for p in docs["Service"]["spec"]["ports"])


def test_systemd_unit_and_environment_file() -> None:
    unit = (DEPLOY / "systemd" / "relay.service").read_text()
    assert "ExecStart=/opt/relay/.venv/bin/relay serve" in unit
    assert "EnvironmentFile=/etc/relay/relay.env" in unit
    names = {line.split("=", 1)[0] for line in (DEPLOY / "systemd" / "relay.env.example").read_text().splitlines()
             if line and not line.startswith("#")}
    assert names <= KNOWN and "RELAY_STORE_URL" in names and "RELAY_MASTER_KEY" in names
