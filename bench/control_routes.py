"""Control routes under a full model queue: how long health, info, usage and ``/metrics`` take while
``--clients`` threads keep the server's thread pool and batcher busy with loss requests, for this checkout
and (``--baseline DIR``) another one, side by side in one run (one tree's server at a time).

Each tree: a real ``blackvip-server`` subprocess (``--model``, default ViT-B-32 with random weights, whose
CPU forwards take seconds; SQLite ledger in a temp dir; one key) imported from that tree; each control
route sampled ``--samples`` times one after the other,
first idle, then with the load running (after ``--warmup-s``); every loss answer is checked (200).

    git worktree add /tmp/base25 c7ba1cc
    python bench/control_routes.py --baseline /tmp/base25 --out bench/results/control_routes.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH: the server is imported from the tree it is given

from client.local_server import LocalServer  # noqa: E402
from shared.codec import pack  # noqa: E402
from shared.protocol import MSGPACK_CONTENT_TYPE, Routes, WireTensor  # noqa: E402
from tests.helpers import random_images  # noqa: E402

KEY = "bench-key"
ROUTES = (Routes.HEALTH, Routes.INFO, Routes.USAGE, "/metrics")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. a git worktree) to compare")
    parser.add_argument("--model", default="ViT-B-32", help="random weights; a CPU forward of seconds")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--clients", type=int, default=64, help="threads sending loss requests")
    parser.add_argument("--images", type=int, default=4, help="images a loss request")
    parser.add_argument("--samples", type=int, default=40, help="calls of each control route per phase")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--server-args", default="", help="more blackvip-server flags, one string")
    parser.add_argument(
        "--full-queue",
        action="store_true",
        help="--max-queue-images of a quarter of the load's images: the batcher's queue stays full and "
        "the overflow is answered 503 queue_full (counted, not a failure)",
    )
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def sample(client: httpx.Client, samples: int) -> dict[str, list[float]]:
    """Milliseconds per call of each control route, called in turn."""
    times: dict[str, list[float]] = {route: [] for route in ROUTES}
    for _ in range(samples):
        for route in ROUTES:
            started = time.perf_counter()
            answer = client.get(route)
            times[route].append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, (route, answer.status_code, answer.text[:200])
    return times


def p(values: list[float], q: int) -> float:
    """The ``q``-th percentile."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run_tree(tree: Path, args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, list[float]]]:
    argv = [
        "--model",
        args.model,
        "--random-init",
        "--device",
        "cpu",
        "--ledger",
        str(workdir / "ledger.sqlite3"),
    ]
    queue = max(1, args.clients * args.images // 4) if args.full_queue else 100_000
    argv += ["--api-keys", KEY, "--max-queue-images", str(queue), *args.server_args.split()]
    # one key sends all the load: its upload slots must not refuse it (an older tree ignores the variable)
    env = {"PYTHONPATH": str(tree), "BLACKVIP_MAX_UPLOADS_PER_KEY": str(args.clients + 4)}
    server = LocalServer(argv, env=env, log_path=workdir / "server.log").start()
    headers = {"Authorization": f"Bearer {KEY}"}
    stop, answers, failures, queue_full = threading.Event(), [0], [], [0]
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
            task_id = client.post(Routes.TASKS, json={"class_names": ["a", "b", "c"]}).json()["task_id"]
            idle = sample(client, args.samples)
            images = random_images(args.images, "uint8", size=args.image_size)
            body = pack({"images": WireTensor.from_numpy(images).model_dump(), "labels": [0] * args.images})

            def load() -> None:
                url = f"{server.url}{Routes.LOSS.format(task_id=task_id)}"
                sent = {**headers, "Content-Type": MSGPACK_CONTENT_TYPE}
                with httpx.Client(headers=sent, timeout=300) as c:
                    while not stop.is_set():
                        answer = c.post(url, content=body)
                        if args.full_queue and answer.status_code == 503 and "queue_full" in answer.text:
                            queue_full[0] += 1
                        elif answer.status_code != 200:
                            failures.append(answer.status_code)
                        answers[0] += 1

            threads = [threading.Thread(target=load) for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            time.sleep(args.warmup_s)
            loaded = sample(client, args.samples)
            stop.set()
            for thread in threads:
                thread.join()
    finally:
        server.stop()
    assert not failures, f"loss requests failed: {failures[:5]}"
    print(
        f"{tree}: {answers[0]} loss requests answered, {queue_full[0]} of them 503 queue_full",
        file=sys.stderr,
    )
    return {
        "idle": idle,
        "loaded": loaded,
        "queue_full": [float(queue_full[0])],
        "answers": [float(answers[0])],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline and not (args.baseline / "server" / "main.py").is_file():
        raise SystemExit(f"--baseline {args.baseline} is not a checkout of this project (no server/main.py)")
    trees = {"this checkout": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
    results = {}
    for label, tree in trees.items():
        with tempfile.TemporaryDirectory() as workdir:
            results[label] = run_tree(tree, args, Path(workdir))
    lines = [
        f"Control routes: ms per call, {args.samples} calls each, idle and with {args.clients} clients "
        f"sending loss requests of {args.images} images ({args.model}, random weights, CPU; 2 CPUs; "
        f"server flags: {args.server_args or 'defaults'})",
        "",
        "| tree | route | idle p50 | idle p99 | loaded p50 | loaded p99 | loaded max |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    if args.full_queue:
        lines[0] += "; the queue kept full: --max-queue-images of a quarter of the load's images"
    for label, phases in results.items():
        if args.full_queue:
            lines.insert(1, f"{label}: {phases['queue_full'][0]:.0f} of {phases['answers'][0]:.0f} load "
                         "requests answered 503 queue_full")  # fmt: skip
        for route in ROUTES:
            idle, loaded = phases["idle"][route], phases["loaded"][route]
            lines.append(
                f"| {label} | `{route}` | {p(idle, 50):.1f} | {p(idle, 99):.1f} | {p(loaded, 50):.1f} "
                f"| {p(loaded, 99):.1f} | {max(loaded):.1f} |"
            )
    if args.baseline:
        lines += ["", f"baseline: {args.baseline}"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
