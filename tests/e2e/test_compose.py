"""docker-compose.yml, proved against the code without a Docker engine: each service's entrypoint
(from its Dockerfile), command, environment, volumes, health check and URLs are run as local
processes on loopback, with container paths mapped to temporary folders."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from shared.protocol import Routes
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's ${VAR:-default} and ${VAR} against the shell environment ``shell``."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return shell.get(name) or default

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", substitute, value)


def dockerfile_facts(path: Path) -> tuple[list[str], dict[str, str]]:
    """The ENTRYPOINT (exec form) and the ENV values of a Dockerfile."""
    text = path.read_text().replace("\\\n", " ")
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", text, re.M):
        env.update(dict(pair.split("=", 1) for pair in line.split()))
    return entrypoint, env


class Mounts:
    """Container paths -> local folders, from a service's volumes."""

    def __init__(self, volumes: list[str], root: Path, shell: dict[str, str]) -> None:
        self.table: dict[str, Path] = {}
        for volume in volumes:
            source, target = interpolate(volume, shell).split(":")[:2]
            local = root / source.lstrip("./").replace("/", "_")
            local.mkdir(parents=True, exist_ok=True)
            self.table[target] = local

    def local(self, value: str) -> str:
        for target, local in self.table.items():
            if value == target or value.startswith(target + "/"):
                return str(local) + value[len(target) :]
        return value


def service_process(service: dict[str, Any], mounts: Mounts, shell: dict[str, str]) -> tuple[list[str], dict]:
    entrypoint, image_env = dockerfile_facts(ROOT / service["build"]["dockerfile"])
    env = {**image_env, **{k: interpolate(str(v), shell) for k, v in service.get("environment", {}).items()}}
    env = {k: mounts.local(v) for k, v in env.items()}
    command = [mounts.local(interpolate(arg, shell)) for arg in service.get("command", [])]
    return [str(BIN / entrypoint[0]), *entrypoint[1:], *command], env


def wait_healthy(healthcheck: list[str], timeout: float = 120.0) -> None:
    assert healthcheck[0] == "CMD"
    deadline = time.monotonic() + timeout
    while subprocess.run(healthcheck[1:], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "health check never passed"
        time.sleep(0.5)


def test_compose_services_run_as_local_processes(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server, client = compose["services"]["server"], compose["services"]["client"]
    shell = {"BLACKVIP_STEPS": "3", "BLACKVIP_EVAL_EVERY": "3"}  # a user's exports: a short demo
    port = free_port()

    server_mounts = Mounts(server["volumes"], tmp_path / "volumes", shell)
    argv, env = service_process(server, server_mounts, shell)
    container_port = env["BLACKVIP_PORT"]
    published = interpolate(server["ports"][0], shell)
    assert published == f"127.0.0.1:8000:{container_port}"  # on loopback, the port that is served
    env.update(BLACKVIP_HOST="127.0.0.1", BLACKVIP_PORT=str(port))  # loopback instead of the container's
    health = [
        part.replace(f"127.0.0.1:{container_port}", f"127.0.0.1:{port}")
        for part in server["healthcheck"]["test"]
    ]
    assert any(f":{port}{Routes.HEALTH}" in part for part in health)
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(argv, env={"PATH": str(BIN), **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy([health[0], sys.executable, *health[2:]])

        assert client["depends_on"]["server"]["condition"] == "service_healthy"
        client_mounts = Mounts(client["volumes"], tmp_path / "volumes", shell)
        argv, env = service_process(client, client_mounts, shell)
        url = env["BLACKVIP_URL"]
        assert url == f"http://server:{container_port}"  # the service name and the served port
        env["BLACKVIP_URL"] = f"http://127.0.0.1:{port}"
        job = subprocess.run(argv, env={"PATH": str(BIN), **env}, capture_output=True, text=True, timeout=300)
        assert job.returncode == 0, job.stderr
        (run_root,) = Path(client_mounts.local("/results/demo")).glob("2*")  # the demo's timestamped folder
        assert (run_root / "results.md").exists() and (run_root / "accuracy_vs_images.png").exists()
        summaries = [
            json.loads((run_root / m / "summary.json").read_text()) for m in ("zeroshot", "blackvip")
        ]
        assert summaries[1]["steps"] == 3
    finally:
        process.terminate()
        process.wait(timeout=30)
    ledger = Path(server_mounts.local("/data/ledger.sqlite3"))
    assert "refusing to serve" not in (tmp_path / "server.log").read_text()
    with sqlite3.connect(ledger) as db:
        images = db.execute("SELECT SUM(images) FROM queries").fetchone()[0]
    assert images == sum(s["train"]["images"] + s["eval"]["images"] for s in summaries)


def test_compose_published_on_every_interface_needs_keys(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server = compose["services"]["server"]
    for shell, starts in (
        ({"BLACKVIP_BIND": "0.0.0.0"}, False),
        ({"BLACKVIP_BIND": "0.0.0.0", "BLACKVIP_API_KEYS": "k"}, True),
    ):
        argv, env = service_process(server, Mounts(server["volumes"], tmp_path / "v", shell), shell)
        env.update(BLACKVIP_PORT=str(free_port()), BLACKVIP_MODEL="tiny-vit", BLACKVIP_RANDOM_INIT="1")
        process = subprocess.Popen(argv, env={"PATH": str(BIN), **env}, stderr=subprocess.PIPE, text=True)
        try:
            returncode = process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # still serving: it started
            returncode = None
        finally:
            process.terminate()
            stderr = process.communicate(timeout=30)[1]
        if starts:
            assert returncode is None, stderr
        else:
            assert returncode == 2 and "no API keys" in stderr and "0.0.0.0" in stderr
