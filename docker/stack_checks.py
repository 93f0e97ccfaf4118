"""The container stage's checks (docker/ci-stack.sh runs them; so can anyone with the images built): the
compose files brought up for real on a Docker engine, as a user brings them up, and what they answer
compared with what the client job says it spent.

1. ``docker-compose up``: the server healthy; the compose client job (``--profile jobs``: its own command,
   the offline demo, with ``BLACKVIP_STEPS`` = ``--steps``) exits 0; its results table, plot and summaries
   are in the ``results`` volume; the server's ``/v1/usage`` for the job's key equals the job's own meter
   (requests, images, cost) summed over its summaries, the cost plus the texts of its task registrations
   (the summaries' cost is its images'); the monitoring profile's Prometheus has the server as
   a target, up, and its query of ``blackvip_images_charged_total`` returns the charged images.
2. The scale file: 3 replicas on PostgreSQL behind nginx, Prometheus up on all 3; a job (3 x ``--steps``)
   through the balancer; ``docker kill`` of one replica once the job has been charged for a while; the job
   still exits 0, and the ledger's counts (``/v1/usage`` through the balancer) equal the job's meter.
Each starts by removing what an interrupted earlier run of the project left, and ends with
``docker-compose down -v``, whatever happened. Standard library only: runs with any python3.

    COMPOSE_PROJECT_NAME=blackvipci python3 docker/stack_checks.py [--steps 20] [--only up|scale]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE = ("docker-compose.yml",)
SCALE = ("docker-compose.yml", "docker-compose.scale.yml")
PORT, PROMETHEUS_PORT = 18000, 19090  # published on 127.0.0.1 only
JOB_RESULTS = "/results/demo"  # the compose client service's default command writes here

# In the client image: each job's summary.json under a demo folder of the results volume, and its files.
READ_RESULTS = """
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
print(json.dumps({
    "files": sorted(str(p.relative_to(root)) for p in root.glob("*/*") if p.suffix in (".md", ".png")),
    "summaries": {
        str(p.parent.relative_to(root)): json.loads(p.read_text()) for p in root.rglob("summary.json")
    },
}))
"""


def log(message: str) -> None:
    print(f"stack-checks: {message}", flush=True)


def compose(files: tuple[str, ...], *args: str, env: dict[str, str], capture: bool = False) -> str:
    command = ["docker-compose", *[f"-f{name}" for name in files], *args]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, text=True, capture_output=capture)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}\n{done.stderr if capture else ''}")
    return done.stdout if capture else ""


def bring_down(files: tuple[str, ...], env: dict[str, str]) -> None:
    """``docker-compose down -v --remove-orphans`` with every profile: the project's containers, its network
    and its named volumes, whatever file set started them."""
    profiles = ["--profile", "jobs", "--profile", "monitoring"]
    down = ["down", "-v", "--remove-orphans"]
    command = ["docker-compose", *[f"-f{name}" for name in files], *profiles, *down]
    subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, check=False)


def leftovers() -> list[str]:
    """The names of containers an earlier, interrupted run of this project left (``restart: unless-stopped``
    brings them back with the engine, holding the published ports and the old ledger)."""
    project = os.environ.get("COMPOSE_PROJECT_NAME", ROOT.name)
    label = f"label=com.docker.compose.project={project}"
    listed = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}", "--filter", label], capture_output=True, text=True
    )
    return listed.stdout.split()


@contextmanager
def stack(files: tuple[str, ...], env: dict[str, str]) -> Iterator[None]:
    left = leftovers()
    if left:
        log(f"removing what an earlier run left: {' '.join(sorted(left))}")
        bring_down(SCALE, env)  # the scale file's services and volumes are a superset of the base file's
        if leftovers():
            raise SystemExit(f"could not remove the earlier run's containers: {' '.join(leftovers())}")
    try:
        yield
    finally:
        if os.environ.get("BLACKVIP_KEEP_STACK") != "1":
            bring_down(files, env)


def wait_for(what: str, ready: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(1)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")


def get_json(url: str, key: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):  # not up yet
        return None


def healthy(files: tuple[str, ...], env: dict[str, str], service: str) -> list[str]:
    """The ids of ``service``'s containers if every one is healthy, else []."""
    ids = compose(files, "ps", "-q", service, env=env, capture=True).split()
    if not ids:
        return []
    states = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Health.Status}}", *ids], capture_output=True, text=True
    ).stdout.split()
    return ids if states and all(state == "healthy" for state in states) else []


def run_job(files: tuple[str, ...], env: dict[str, str], steps: int) -> subprocess.Popen:
    """The compose client service's default job as ``docker-compose --profile jobs up`` runs it (its
    image, entrypoint, command and volumes: the offline demo into /results/demo), with BLACKVIP_STEPS and
    BLACKVIP_EVAL_EVERY set to ``steps``."""
    args = ["--profile", "jobs", "run", "-T", "--rm", "--no-deps", "client"]
    job_env = {**os.environ, **env, "BLACKVIP_STEPS": str(steps), "BLACKVIP_EVAL_EVERY": str(steps)}
    command = ["docker-compose", *[f"-f{name}" for name in files], *args]
    return subprocess.Popen(command, cwd=ROOT, env=job_env)


def job_spend(files: tuple[str, ...], env: dict[str, str], workdir: str) -> dict[str, float]:
    """What the job's summaries say it spent, read from the results volume by the client image."""
    out = compose(
        files, "--profile", "jobs", "run", "-T", "--rm", "--no-deps", "--entrypoint", "python", "client",
        "-c", READ_RESULTS, workdir, env=env, capture=True,
    )  # fmt: skip
    results = json.loads(out.strip().splitlines()[-1])
    files_found = results["files"]
    log(f"results in the volume under {workdir}: {', '.join(files_found)}")
    if not any(name.endswith("results.md") for name in files_found) or not any(
        name.endswith("accuracy_vs_images.png") for name in files_found
    ):
        raise SystemExit(f"the job's results table or plot is missing from the volume: {files_found}")
    summaries = results["summaries"]
    if sorted(Path(name).name for name in summaries) != ["blackvip", "zeroshot"]:
        raise SystemExit(f"expected the zeroshot and blackvip summaries, found {sorted(summaries)}")
    spend = {"requests": 0.0, "images": 0.0, "cost": 0.0}
    for summary in summaries.values():
        for part in ("train", "eval"):
            for name in spend:
                spend[name] += summary[part][name]
    return spend


def compare(usage: dict[str, Any], spend: dict[str, float], where: str) -> None:
    total = usage["total"]
    charged = {"requests": total["requests"], "images": total["images"], "cost": total["cost"]}
    # the registrations' texts are charged by the server and not in a run's summary (images only)
    texts_cost = total["texts"] * usage.get("price_per_1k_texts", 0.0) / 1000.0
    log(f"{where}: ledger {charged} ({total['texts']} texts) / client meter {spend}")
    if charged["requests"] != spend["requests"] or charged["images"] != spend["images"]:
        raise SystemExit(f"{where}: the ledger's counts differ from the client's meter")
    if abs(charged["cost"] - texts_cost - spend["cost"]) > 1e-6 * max(1.0, spend["cost"]):
        raise SystemExit(f"{where}: the ledger's cost differs from the client's meter and its texts")


def prometheus_targets(up: int) -> Callable[[], list[dict] | None]:
    def ready() -> list[dict] | None:
        answer = get_json(f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/targets")
        active = (answer or {}).get("data", {}).get("activeTargets", [])
        return active if len([t for t in active if t["health"] == "up"]) == up else None

    return ready


def prometheus_images() -> float | None:
    query = urllib.parse.quote("sum(blackvip_images_charged_total)")
    answer = get_json(f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?query={query}")
    result = (answer or {}).get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None


def check_up(steps: int) -> None:
    key = "ci-" + secrets.token_urlsafe(16)
    env = {"BLACKVIP_API_KEYS": key, "BLACKVIP_API_KEY": key, "BLACKVIP_PUBLISH_PORT": str(PORT),
           "BLACKVIP_PROMETHEUS_PORT": str(PROMETHEUS_PORT)}  # fmt: skip
    with stack(BASE, env):
        started = time.monotonic()
        compose(BASE, "up", "-d", "server", env=env)
        wait_for("the server to be healthy", lambda: healthy(BASE, env, "server"), 300)
        log(f"docker-compose up: server healthy after {time.monotonic() - started:.0f} s")
        started = time.monotonic()
        code = run_job(BASE, env, steps).wait()
        if code != 0:
            raise SystemExit(f"the compose client job exited {code}")
        log(f"the client job ({steps} steps) exited 0 after {time.monotonic() - started:.0f} s")
        spend = job_spend(BASE, env, JOB_RESULTS)
        usage = get_json(f"http://127.0.0.1:{PORT}/v1/usage", key)
        compare(usage, spend, "docker-compose up")
        compose(BASE, "--profile", "monitoring", "up", "-d", "prometheus", env=env)
        targets = wait_for("Prometheus' target to be up", prometheus_targets(1), 120)
        log(f"Prometheus targets up: {[t['scrapeUrl'] for t in targets]}")
        wait_for(
            "Prometheus to return the charged images",
            lambda: prometheus_images() == usage["total"]["images"],
            60,
        )
        log(f"Prometheus: sum(blackvip_images_charged_total) = {prometheus_images():.0f} (the ledger's)")


def charged_mid_job(job: subprocess.Popen, usage_url: str, key: str, requests: int = 40) -> bool:
    if job.poll() is not None:
        raise SystemExit(f"the job ended (exit {job.returncode}) before {requests} requests: raise --steps")
    return (get_json(usage_url, key) or {}).get("total", {}).get("requests", 0) >= requests


def check_scale(steps: int) -> None:
    key = "ci-" + secrets.token_urlsafe(16)
    env = {"BLACKVIP_API_KEYS": key, "BLACKVIP_API_KEY": key, "BLACKVIP_LB_PORT": str(PORT),
           "BLACKVIP_PUBLISH_PORT": f"{PORT + 1}-{PORT + 9}", "BLACKVIP_PG_PASSWORD": secrets.token_hex(12),
           "BLACKVIP_PROMETHEUS_PORT": str(PROMETHEUS_PORT)}  # fmt: skip
    with stack(SCALE, env):
        started = time.monotonic()
        compose(SCALE, "up", "-d", "--scale", "server=3", "balancer", env=env)
        replicas = wait_for("3 healthy replicas", lambda: len(healthy(SCALE, env, "server")) == 3 and
                            healthy(SCALE, env, "server"), 300)  # fmt: skip
        wait_for("the balancer to be healthy", lambda: healthy(SCALE, env, "balancer"), 120)
        log(f"scale: 3 replicas and the balancer healthy after {time.monotonic() - started:.0f} s")
        compose(SCALE, "--profile", "monitoring", "up", "-d", "--no-deps", "prometheus", env=env)
        targets = wait_for("Prometheus' 3 targets to be up", prometheus_targets(3), 120)
        log(f"Prometheus targets up: {sorted(t['scrapeUrl'] for t in targets)}")
        job = run_job(SCALE, env, 3 * steps)  # long enough to be killed under
        usage_url = f"http://127.0.0.1:{PORT}/v1/usage"
        wait_for("the job to be charged for 40 requests", lambda: charged_mid_job(job, usage_url, key), 600)
        subprocess.run(["docker", "kill", replicas[0]], check=True, capture_output=True)
        killed = time.monotonic()
        log(f"docker kill {replicas[0][:12]} (one of 3 replicas) mid-job")
        code = job.wait()
        if code != 0:
            raise SystemExit(f"the job through the balancer exited {code} after a replica was killed")
        log(f"the job through the balancer exited 0, {time.monotonic() - killed:.0f} s after the kill")
        spend = job_spend(SCALE, env, JOB_RESULTS)
        compare(get_json(usage_url, key), spend, "scale, one replica killed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=int(os.environ.get("BLACKVIP_STEPS", "20")))
    parser.add_argument("--only", choices=["up", "scale"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only in (None, "up"):
        check_up(args.steps)
    if args.only in (None, "scale"):
        check_scale(args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
