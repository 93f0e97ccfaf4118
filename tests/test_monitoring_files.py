"""The monitoring profile's files against the server they watch: the Grafana dashboard's queries name
only metrics and labels the real server exposes, on the provisioned data source; Prometheus scrapes the
server service's metrics path and port; the compose profile mounts each file where its reader looks.
(Prometheus itself runs on these files in the container stage, docker/ci-stack.sh; Grafana's image cannot
be obtained on the project's machines, so this is all that checks its files.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from server.api.metrics import METRICS_PATH
from server.metrics import ServerMetrics
from shared.protocol import Endpoint, ErrorCode

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docker/grafana/dashboards/blackvip.json"


def exposed_series() -> dict[str, set[str]]:
    """Every sample name the server's registry exposes once each instrument has moved, with its labels."""
    metrics = ServerMetrics(lambda: 0.0)
    metrics.charged("key-0123456789ab", Endpoint.LOSS, 3)
    metrics.forward(0.01, 3, 0)
    metrics.ledger_commit(0.002, 1, True)
    metrics.ledger_commit(0.002, 1, False)
    metrics.rejected_request(ErrorCode.QUOTA_EXCEEDED)
    metrics.request_done("/v1/tasks/{task_id}/loss", "POST", 200, 0.02)
    text, _ = metrics.render(None)
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def dashboard_targets() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    return [target for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_dashboard_query_names_metrics_and_labels_the_server_exposes() -> None:
    series = exposed_series()
    targets = dashboard_targets()
    assert len(targets) >= 10
    for target in targets:
        expr = target["expr"]
        names = set(re.findall(r"\bblackvip_[a-z_]+\b", expr))
        assert names, expr
        unknown = names - set(series)
        assert not unknown, f"{expr}: the server exposes no {unknown}"
        labels = set().union(*(series[name] for name in names)) | {"le", "instance", "job"}
        for grouping in re.findall(r"by \(([^)]*)\)", expr):
            wanted = {label.strip() for label in grouping.split(",")}
            assert wanted <= labels, f"{expr}: no label {wanted - labels} on {names}"
        for legend_label in re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]):
            assert legend_label in labels, f"{target['legendFormat']} names a label the query lacks"
    # the panels: charges per key and endpoint, forwards, queue, ledger commits, rejections
    exprs = " ".join(target["expr"] for target in targets)
    for needed in (
        "by (key_id, endpoint) (rate(blackvip_images_charged_total",
        "by (key_id, endpoint) (rate(blackvip_charged_requests_total",
        "blackvip_forward_seconds_bucket",
        "blackvip_forward_batch_images",
        "blackvip_queue_images",
        "blackvip_ledger_commit_seconds_bucket",
        "by (code) (rate(blackvip_rejected_requests_total",
    ):
        assert needed in exprs, needed


def test_the_dashboard_uses_the_provisioned_data_source_and_folder() -> None:
    provisioning = ROOT / "docker/grafana/provisioning"
    sources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    (source,) = sources
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for target in dashboard_targets():
        assert target["datasource"] == {"type": "prometheus", "uid": source["uid"]}
    (provider,) = yaml.safe_load((provisioning / "dashboards/blackvip.yml").read_text())["providers"]
    services = compose_services()
    mounts = dict(volume_pairs(services["grafana"]))
    assert mounts[str(ROOT / "docker/grafana/dashboards")] == provider["options"]["path"]
    assert mounts[str(ROOT / "docker/grafana/provisioning")] == "/etc/grafana/provisioning"


def test_prometheus_scrapes_every_replica_of_the_server_service() -> None:
    config = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == METRICS_PATH
    (discovery,) = job["dns_sd_configs"]
    services = compose_services()
    assert discovery["names"] == ["server"] and "server" in services  # Docker's DNS: one A record a replica
    assert discovery["type"] == "A"
    published = services["server"]["ports"][0]  # "HOST:PORT:TARGET/tcp" as docker-compose 1.29 writes it
    assert discovery["port"] == int(published.split(":")[-1].split("/")[0]) == 8000
    prometheus = services["prometheus"]
    mounts = dict(volume_pairs(prometheus))
    assert mounts[str(ROOT / "docker/prometheus/prometheus.yml")] == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert prometheus["profiles"] == ["monitoring"] and services["grafana"]["profiles"] == ["monitoring"]


def compose_services() -> dict[str, Any]:
    done = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "monitoring", "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


def volume_pairs(service: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for volume in service["volumes"]:
        if isinstance(volume, dict):
            pairs.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            pairs.append((source, target))
    return pairs
