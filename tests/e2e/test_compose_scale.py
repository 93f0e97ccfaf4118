"""docker-compose.scale.yml over docker-compose.yml, proved without a Docker engine as the base file is
(tests/e2e/test_compose.py): the merged configuration comes from ``docker-compose config``, and its
services run as local processes on loopback. The official postgres image's part is played by the
distribution's PostgreSQL made as the image's entrypoint makes it (superuser and database from its
POSTGRES_* variables, password authentication over TCP), two server replicas run the server service's
entrypoint and environment against it, nginx runs the balancer's mounted configuration, each service's
health check is run, and the client service's command talks through the balancer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from server.ledger import Ledger
from shared.protocol import Routes
from tests.e2e.test_compose import BIN, ROOT, Mounts, service_process, wait_healthy
from tests.engines import Nginx, PostgresServer
from tests.helpers import Scrape, free_port

PASSWORD = "s3cret-for-this-test"
# the processes get only the PATH the services would, plus where this checkout's code is when it is
# not the installed one (a worktree run with PYTHONPATH)
BASE_ENV = {"PATH": str(BIN), **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}


def merged_config(shell: dict[str, str]) -> dict[str, Any]:
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "docker-compose.scale.yml")]
    done = subprocess.run(
        ["docker-compose", *files, "config"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **shell},
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def start_replicas(server: dict, shell: dict[str, str], database: PostgresServer, tmp_path: Path) -> list:
    """Two processes of the server service (its entrypoint, command and environment), its ledger URL
    pointed from the compose network's ``postgres:5432`` at the local PostgreSQL; healthy."""
    replicas = []
    for index in range(2):
        argv, env = service_process(server, Mounts(server["volumes"], tmp_path / f"v{index}", shell), shell)
        assert env["BLACKVIP_LEDGER"] == "postgresql://blackvip@postgres:5432/blackvip"
        assert env["PGPASSWORD"] == PASSWORD  # the password reaches the server by libpq's variable
        port = free_port()
        env.update(
            BLACKVIP_LEDGER=env["BLACKVIP_LEDGER"].replace("postgres:5432", f"127.0.0.1:{database.port}"),
            BLACKVIP_HOST="127.0.0.1",
            BLACKVIP_PORT=str(port),
            BLACKVIP_MODEL="tiny-vit",
            BLACKVIP_RANDOM_INIT="1",
        )
        log = (tmp_path / f"replica{index}.log").open("wb")
        process = subprocess.Popen(argv, env={**BASE_ENV, **env}, stdout=log, stderr=subprocess.STDOUT)
        replicas.append((process, port))
    for _, port in replicas:
        health = [
            part.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for part in server["healthcheck"]["test"]
        ]
        wait_healthy([health[0], sys.executable, *health[2:]])
    return replicas


def check_through_balancer(
    balancer: dict, client: dict, ports: list[int], shell: dict, tmp_path: Path
) -> None:
    """nginx from the mounted configuration in front of the replicas: its health check passes, the client
    service's command works through it, and both replicas take their share."""
    mounted = {target: source for source, target, *_ in (v.split(":") for v in balancer["volumes"])}
    assert Path(mounted["/etc/nginx/conf.d/default.conf"]) == Nginx.CONF
    with Nginx([f"127.0.0.1:{port}" for port in ports]) as nginx:
        probe = [
            part.replace("127.0.0.1:8000", f"127.0.0.1:{nginx.port}")
            for part in balancer["healthcheck"]["test"]
        ]
        wait_healthy(probe, timeout=30)
        assert client["environment"]["BLACKVIP_URL"] == "http://balancer:8000"
        argv, env = service_process(client, Mounts([], tmp_path, shell), shell)
        env["BLACKVIP_URL"] = nginx.url
        for _ in range(4):  # least_conn spreads them over both replicas
            shown = subprocess.run(
                [*argv[:1], "info"], env={**BASE_ENV, **env}, capture_output=True, text=True, timeout=120
            )
            assert shown.returncode == 0, shown.stderr
        task = httpx.post(nginx.url + Routes.TASKS, json={"class_names": ["a", "b"]}, timeout=60)
        assert task.status_code == 200, task.text
    for port in ports:
        scrape = Scrape(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        info = {"route": Routes.INFO, "method": "GET", "status": "200"}
        assert scrape.value_or_zero("blackvip_http_requests_total", **info) > 0


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose not installed (.ci/run installs it)"
)
def test_the_scale_override_runs_as_local_processes(tmp_path: Path) -> None:
    shell = {"BLACKVIP_PUBLISH_PORT": "8001-8009", "BLACKVIP_PG_PASSWORD": PASSWORD}
    services = merged_config(shell)["services"]
    postgres, server, balancer, client = (
        services[name] for name in ("postgres", "server", "balancer", "client")
    )
    assert postgres["image"].startswith("postgres:") and balancer["image"].startswith("nginx:")
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert balancer["depends_on"]["server"]["condition"] == "service_healthy"
    assert server["ports"] == ["127.0.0.1:8001-8009:8000/tcp"]  # a range: --scale server=N can publish
    assert balancer["ports"] == ["127.0.0.1:8000:8000/tcp"]

    env = postgres["environment"]
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"], env["POSTGRES_PASSWORD"]) == (
        "blackvip",
        "blackvip",
        PASSWORD,
    )
    # what the official image's entrypoint makes: the superuser with the password, then the database
    with PostgresServer(user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"]) as database:
        database.database(name=env["POSTGRES_DB"])
        check = postgres["healthcheck"]["test"][1:]
        check = [str(database.bin / check[0]), *check[1:], "-h", "127.0.0.1", "-p", str(database.port)]
        wait_healthy(["CMD", *check], timeout=30)
        replicas = start_replicas(server, shell, database, tmp_path)
        try:
            check_through_balancer(balancer, client, [port for _, port in replicas], shell, tmp_path)
        finally:
            for process, _ in replicas:
                process.terminate()
                process.wait(timeout=30)
        # one ledger behind both replicas (the URL with the password in it, as a user may write it)
        url = f"postgresql://blackvip:{PASSWORD}@127.0.0.1:{database.port}/blackvip"
        with closing(Ledger(url)) as ledger:
            assert ledger.usage_by_endpoint("anonymous")["tasks"]["requests"] == 1
