"""Registration stall: another key's 1-image logits latency while one key registers the largest task the
limits allow (1,000 classes x 100 templates = 100,000 texts), with text encoding in chunks
(``--text-encode-chunk`` 8, the default, 16 and 32) beside one model call for all texts (a chunk of
100,000: the model held for the text tower's whole run, as before issue 25, though tokenised outside it
as now), side by side in one run (one server at a time).

Each server: a real ``blackvip-server`` subprocess (``--model``, default toy-digits, its shipped weights;
SQLite ledger in a temp dir; keys ``big`` and ``small``). ``small`` sends 1-image logits one after the
other: ``--idle`` of them alone, then as many as it can while ``big`` registers; the registration's
charge (texts and cost in ``/v1/usage``) is printed too.

    python bench/registration_stall.py --out bench/results/registration_stall.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _clients import MSGPACK_HEADERS, connection, images_body, latency_ms  # noqa: E402

from client.local_server import LocalServer  # noqa: E402
from shared.protocol import Routes  # noqa: E402

KEYS = ("big", "small")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="toy-digits")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--templates", type=int, default=100)
    parser.add_argument("--idle", type=int, default=1000, help="logits calls before the registration")
    parser.add_argument("--chunks", type=int, nargs="+", default=[8, 16, 32, 100_000])
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def maximal_task(classes: int, templates: int) -> dict[str, list[str]]:
    return {
        "class_names": [f"class number {i} of the largest task" for i in range(classes)],
        "templates": [f"a photo of a {{}}, template {j}." for j in range(templates)],
    }


def run_server(chunk: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    argv = ["--model", args.model, "--device", "cpu", "--ledger", str(workdir / "ledger.sqlite3")]
    argv += ["--api-keys", ",".join(KEYS), "--text-encode-chunk", str(chunk)]
    server = LocalServer(argv, log_path=workdir / "server.log").start()
    try:
        with connection(server.url, "small") as small, connection(server.url, "big") as big:
            task_id = small.post(Routes.TASKS, json={"class_names": [str(d) for d in range(10)]}).json()
            url = Routes.LOGITS.format(task_id=task_id["task_id"])
            size = small.get(Routes.INFO).json()["image_size"]
            body = images_body(np.zeros((1, 3, size, size), dtype=np.uint8))

            def call() -> float:
                started = time.perf_counter()
                answer = small.post(url, content=body, headers=MSGPACK_HEADERS)
                assert answer.status_code == 200, answer.text[:200]
                return time.perf_counter() - started

            idle = [call() for _ in range(args.idle)]
            done: list[float] = []

            def register() -> None:
                started = time.perf_counter()
                answer = big.post(Routes.TASKS, json=maximal_task(args.classes, args.templates), timeout=600)
                assert answer.status_code == 200, answer.text[:200]
                done.append(time.perf_counter() - started)

            registration = threading.Thread(target=register)
            registration.start()
            during = []
            while registration.is_alive():
                during.append(call())
            registration.join()
            charged = big.get(Routes.USAGE).json()["by_endpoint"]["tasks"]
    finally:
        server.stop()
    idle_p50, idle_p99 = latency_ms(idle)
    during_p50, during_p99 = latency_ms(during)
    return {
        "registration_s": done[0],
        "idle_p50": idle_p50,
        "idle_p99": idle_p99,
        "during_p50": during_p50,
        "during_p99": during_p99,
        "during_max": max(during) * 1000,
        "calls": len(during),
        "texts": charged["texts"],
        "cost": charged["cost"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = {}
    for chunk in args.chunks:
        with tempfile.TemporaryDirectory() as workdir:
            results[chunk] = run_server(chunk, args, Path(workdir))
    texts = args.classes * args.templates
    lines = [
        f"Registration stall: key `small`'s 1-image logits (ms) while key `big` registers {args.classes} "
        f"classes x {args.templates} templates = {texts:,} texts ({args.model}, CPU, 2 cores)",
        "",
        "| --text-encode-chunk | registration s | texts charged | cost charged | idle p50 | idle p99 "
        "| during p50 | during p99 | during max | calls during | p99 during / idle |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for chunk, r in results.items():
        lines.append(
            f"| {chunk:,} | {r['registration_s']:.1f} | {r['texts']:,} | {r['cost']:g} | {r['idle_p50']:.1f} "
            f"| {r['idle_p99']:.1f} | {r['during_p50']:.1f} | {r['during_p99']:.1f} | {r['during_max']:.1f} "
            f"| {r['calls']} | {r['during_p99'] / r['idle_p99']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
