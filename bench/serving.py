"""Serving throughput, ISSUE 11 (b): many small concurrent requests against one large one, with the
server's dynamic batcher on and off, side by side in one run; and the server's wire path per MB.

    python bench/serving.py                          # toy-digits, 10 s per cell (~2 min)
    python bench/serving.py --seconds 3 --out bench/results/throughput.md

For each server mode (batcher on: the default flags; off: ``--no-batcher``) a fresh real server
subprocess is started (toy-digits, temp ledger, free loopback port) and loaded by 1 client x batch
128 (the reference), then 1, 8 and 32 concurrent clients x batch 4, each cell for ``--seconds``.
Every client is a thread with its own keep-alive httpx connection sending uint8 logits requests. The
table gives images/s, p50/p99 latency and each cell's ratio to one client x batch 128 in the same
mode. The two modes run one after the other, never at once: they would share the CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch
from _clients import DIGIT_TASK, MSGPACK_HEADERS, connection, images_body, latency_ms, run_clients

from client.local_server import LocalServer
from server.api.inputs import check_images, parse_msgpack
from server.serving.clip_model import fill_unit_pixels
from server.serving.service import wire_view
from shared.codec import pack
from shared.protocol import LogitsRequest, LogitsResponse, Routes, WireTensor

CELLS = ((1, 128), (1, 4), (8, 4), (32, 4))  # (clients, images per request)
MODES = {"on": (), "off": ("--no-batcher",)}
SECTION = "## (b) Serving: concurrent small requests, batcher on and off"


@dataclass
class Cell:
    mode: str
    clients: int
    batch: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per cell")
    parser.add_argument("--model", default="toy-digits")
    parser.add_argument("--server-args", default="", help="extra server flags for both modes")
    parser.add_argument("--out", type=Path, help="write the tables into this file's section (b)")
    return parser.parse_args(argv)


def client_loop(url: str, task_id: str, body: bytes, until: float, latencies: list, errors: list) -> None:
    path = Routes.LOGITS.format(task_id=task_id)
    with connection(url) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            response = http.post(path, content=body, headers=MSGPACK_HEADERS)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(response.status_code)


def run_cell(url: str, task_id: str, size: int, mode: str, clients: int, batch: int, seconds: float) -> Cell:
    rng = np.random.default_rng(clients * 1000 + batch)
    bodies = [images_body(rng.integers(0, 256, (batch, 3, size, size), np.uint8)) for _ in range(clients)]
    warm_up = url + Routes.LOGITS.format(task_id=task_id)
    httpx.post(warm_up, content=bodies[0], headers=MSGPACK_HEADERS, timeout=120.0)  # warms the path, untimed
    latencies: list[float] = []
    errors: list[int] = []
    elapsed = run_clients(
        lambda i, until: client_loop(url, task_id, bodies[i], until, latencies, errors), clients, seconds
    )
    p50, p99 = latency_ms(latencies)
    return Cell(mode, clients, batch, len(latencies) * batch / elapsed, p50, p99, len(latencies), len(errors))


def run_mode(args: argparse.Namespace, mode: str, workdir: Path) -> list[Cell]:
    argv = ["--model", args.model, "--ledger", str(workdir / f"{mode}.sqlite3"), *MODES[mode]]
    argv += args.server_args.split()
    server = LocalServer(argv, log_path=workdir / f"{mode}.log").start()
    try:
        info = httpx.get(server.url + Routes.INFO).json()
        print(f"batcher {mode}: serving {info.get('serving')}", file=sys.stderr)
        task_id = httpx.post(server.url + Routes.TASKS, json=DIGIT_TASK).json()
        cells = []
        for clients, batch in CELLS:
            cell = run_cell(
                server.url, task_id["task_id"], info["image_size"], mode, clients, batch, args.seconds
            )
            print(f"  {clients} x {batch}: {cell.images_per_s:.0f} images/s", file=sys.stderr)
            cells.append(cell)
        return cells
    finally:
        server.stop()


def per_mb(seconds_per_call: float, nbytes: int) -> float:
    return seconds_per_call * 1000 / (nbytes / 2**20)


def timed(call, repeats: int = 5) -> float:
    """Median seconds of ``call`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def wire_table(batch: int = 32, size: int = 224) -> str:
    """The server's decode (msgpack, checks, into the float32 forward buffer) per MB of body for
    each image dtype, and the answer's encode per MB, packed from a view against the model round trip."""
    rng = np.random.default_rng(0)
    lines = ["| what | dtype | MB | ms per MB |", "|---|---|---:|---:|"]
    for dtype in ("float32", "float16", "uint8"):
        images = rng.integers(0, 256, (batch, 3, size, size), np.uint8)
        images = images if dtype == "uint8" else (images / 255.0).astype(dtype)
        body = pack({"images": WireTensor.from_numpy(images).model_dump()})
        parsed = parse_msgpack(body, LogitsRequest)
        checked = check_images(parsed.images, size, batch)
        buffer = torch.empty((batch, 3, size, size), dtype=torch.float32)
        steps = {
            "decode: msgpack + model": lambda b=body: parse_msgpack(b, LogitsRequest),
            "decode: tensor checks": lambda p=parsed: check_images(p.images, size, batch),
            "decode: into float32 forward buffer": lambda c=checked, out=buffer: fill_unit_pixels(out, c),
        }
        for name, call in steps.items():
            lines.append(
                f"| {name} | {dtype} | {len(body) / 2**20:.1f} | {per_mb(timed(call), len(body)):.2f} |"
            )
    logits = rng.standard_normal((2048, 1000)).astype(np.float32)
    encodes = {
        "encode answer: view, packed once (now)": lambda: pack({"logits": wire_view(logits)}),
        "encode answer: tobytes + model + pack (before)": lambda: pack(
            LogitsResponse(logits=WireTensor.from_numpy(logits)).model_dump()
        ),
    }
    for name, call in encodes.items():
        lines.append(
            f"| {name} | float32 | {logits.nbytes / 2**20:.1f} | {per_mb(timed(call), logits.nbytes):.2f} |"
        )

    return "\n".join(lines)


def throughput_table(cells: list[Cell]) -> str:
    reference = {c.mode: c.images_per_s for c in cells if (c.clients, c.batch) == CELLS[0]}
    lines = [
        "| batcher | clients x batch | images/s | p50 ms | p99 ms | requests | errors | vs 1 x 128 same mode "
        "| vs 1 x 128 batcher on |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.mode} | {c.clients} x {c.batch} | {c.images_per_s:,.0f} | {c.p50_ms:.1f} | {c.p99_ms:.1f} "
            f"| {c.requests} | {c.errors} | {c.images_per_s / reference[c.mode]:.2f}x "
            f"| {c.images_per_s / reference['on']:.2f}x |"
        )
    return "\n".join(lines)


def write_section(path: Path, text: str, section: str = SECTION) -> None:
    """Replace ``section`` of ``path``, from its heading to the next ``## `` (the others are kept)."""
    old = path.read_text() if path.exists() else "# Throughput (ISSUE 11)\n"
    head, _, rest = old.partition(section)
    tail = rest[rest.index("\n## ") :] if "\n## " in rest else ""
    path.write_text(head.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n" + tail)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cells = [cell for mode in MODES for cell in run_mode(args, mode, Path(tmp))]
    command = "python bench/serving.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n\n".join(
        [
            SECTION,
            f"`{command.strip()}`: model {args.model}, {args.seconds:g} s per cell, uint8 logits requests.",
            throughput_table(cells),
            "### The server's wire path, per MB of request body (in-process)",
            wire_table(),
        ]
    )
    print(text)
    if args.out:
        write_section(args.out, text)
    return 1 if any(c.errors for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
