"""Server memory under 16 concurrent maximum-size uploads from one key: the RSS of a real
``blackvip-server`` (toy-digits, SQLite ledger in a temp dir) idle and at its peak while ``--clients``
threads each send one ``--max-request-bytes`` body at once, under several settings side by side:

* a memory budget of ``--budget-mb`` (uploads per key raised to the clients: the budget alone bounds);
* a budget large enough for every upload (the same, unbounded in effect: what issue 25 measured);
* that large budget with the default 4 uploads per key (the slots alone bound).

Each client sends ``Expect: 100-continue`` and its body only after ``100 Continue``: a refused upload
(503 ``server_busy``, 429 ``too_many_uploads``) is answered before its body is sent. The body is bytes
that are not msgpack: the server reads it whole, then answers 400 ``malformed_body`` (nothing runs the
model, nothing is charged), so the peak is the bodies held. RSS is sampled from /proc every 10 ms.

    python bench/upload_memory.py --out bench/results/upload_memory.md
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from client.local_server import LocalServer  # noqa: E402
from shared.protocol import MSGPACK_CONTENT_TYPE, Routes  # noqa: E402

KEY = "bench-key"
MIB = 2**20
CHUNK = b"\xc1" * MIB
CODES = {
    "400": "400 malformed_body",
    "429": "429 too_many_uploads",
    "503": "503 server_busy",
}  # 0xc1 is no msgpack type: the read body is refused at once


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--request-mb", type=int, default=64, help="--max-request-bytes, in MiB")
    parser.add_argument("--budget-mb", type=float, default=256.0)
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def upload(port: int, path: str, size: int, outcomes: Counter[str], lock: threading.Lock) -> None:
    """One upload of ``size`` bytes; notes the answer's status and error code."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: {MSGPACK_CONTENT_TYPE}\r\nContent-Length: {size}\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(head.encode())
        answer = sock.recv(65536)
        if answer.startswith(b"HTTP/1.1 100"):
            for _ in range(size // MIB):
                sock.sendall(CHUNK)
            answer = answer.partition(b"\r\n\r\n")[2] or sock.recv(65536)
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        status = answer.split()[1].decode()
    with lock:
        outcomes[CODES.get(status, status)] += 1


def run(label: str, flags: list[str], args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    size = args.request_mb * MIB
    argv = [
        "--ledger",
        str(workdir / f"{label}.sqlite3"),
        "--api-keys",
        KEY,
        "--max-request-bytes",
        str(size),
    ]
    server = LocalServer([*argv, *flags], log_path=workdir / f"{label}.log").start()
    try:
        assert server.proc is not None
        pid, port = server.proc.pid, server.port
        auth = {"Authorization": f"Bearer {KEY}"}
        task = httpx.post(f"{server.url}{Routes.TASKS}", json={"class_names": ["a", "b"]}, headers=auth)
        path = Routes.LOGITS.format(task_id=task.json()["task_id"])
        time.sleep(1.0)
        idle = rss_mb(pid)
        peak, done = [idle], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(rss_mb(pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        outcomes: Counter[str] = Counter()
        lock = threading.Lock()
        clients = [
            threading.Thread(target=upload, args=(port, path, size, outcomes, lock))
            for _ in range(args.clients)
        ]
        started = time.monotonic()
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
    finally:
        server.stop()
    return {
        "label": label,
        "flags": " ".join(flags),
        "idle": idle,
        "peak": max(peak),
        "s": elapsed,
        **outcomes,
    }


def render(args: argparse.Namespace, rows: list[dict[str, object]]) -> str:
    lines = [
        f"# Server RSS under {args.clients} concurrent {args.request_mb} MiB uploads from one key",
        "",
        "toy-digits on CPU, one key, each client one upload with `Expect: 100-continue`;",
        "RSS from /proc/PID/status (VmRSS) every 10 ms. Answers: 400 malformed_body = body read whole",
        "(then refused unparsed), 503 server_busy = over the memory budget, 429 too_many_uploads = over",
        "the key's upload slots; both refused before a byte of the body was sent.",
        "",
        "| run | flags | idle RSS MiB | peak RSS MiB | growth MiB | answers | wall s |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(row.items()) if k[:1].isdigit())
        idle, peak = float(row["idle"]), float(row["peak"])  # type: ignore[arg-type]
        lines.append(
            f"| {row['label']} | `{row['flags']}` | {idle:.0f} | {peak:.0f} | {peak - idle:.0f} | {answers} "
            f"| {float(row['s']):.1f} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    everyone = str(args.clients)
    room_for_all = str(args.clients * args.request_mb + 64)
    runs = [
        ("budget", ["--memory-budget-mb", f"{args.budget_mb:g}", "--max-uploads-per-key", everyone]),
        ("no bound in effect", ["--memory-budget-mb", room_for_all, "--max-uploads-per-key", everyone]),
        ("upload slots (4)", ["--memory-budget-mb", room_for_all]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(label, flags, args, Path(tmp)) for label, flags in runs]
    table = render(args, rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
