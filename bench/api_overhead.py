"""How much throughput the HTTP API costs compared with calling the model in-process.

For each model, one ``blackvip-server`` subprocess and one in-process :class:`ClipBackend` are built
from the same flags (same seed, so the same random weights). Each (batch, dtype) cell is timed
in-process first and through the SDK second, never at once, since both share the same CPU cores.

    python bench/api_overhead.py                       # full default run
    python bench/api_overhead.py --models tiny-vit --seconds 0.5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client import BlackVIPClient
from client.local_server import LocalServer
from server.flags import parse_args as parse_server_args
from server.serving.clip_model import ClipBackend

log = logging.getLogger("bench.api_overhead")

DEFAULT_MODELS = ("tiny-vit", "ViT-B-32")
DTYPES = ("float32", "float16", "uint8")
CLASS_NAMES = [f"class {i}" for i in range(10)]
TEMPLATES = ["a photo of a {}."]
# A (64, 3, 224, 224) float32 batch is 38.5 MB; the default 64 MiB cap would fit it, but larger
# batches passed with --batches should not fail on the body limit.
MAX_REQUEST_BYTES = 128 * 2**20
HEALTH_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Row:
    model: str
    batch: int
    dtype: str
    in_process: float  # images per second
    api: float


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Images/s in-process vs through the blackvip API.")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="models to serve")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64], help="images per call")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="target timed seconds per cell and mode (after one warm-up call)",
    )
    parser.add_argument("--min-reps", type=int, default=3, help="least timed calls per cell and mode")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="stop a cell and mode once this much time is spent, even below --min-reps",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every call's duration")
    args = parser.parse_args(argv)
    if min(args.batches) < 1 or args.seconds < 0 or args.min_reps < 1:
        parser.error("--batches must be >= 1, --seconds >= 0 and --min-reps >= 1")
    return args


def time_calls(call: Callable[[], object], seconds: float, min_reps: int, max_seconds: float) -> float:
    """Median seconds per call; the caller has made an untimed warm-up call already."""
    durations: list[float] = []
    spent = 0.0
    while len(durations) < min_reps or spent < seconds:
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
        spent += durations[-1]
        if spent >= max_seconds:
            break
    log.debug("seconds per call: %s", " ".join(f"{d:.4f}" for d in durations))
    # The median, not the mean: on this 2-vCPU VM a process sporadically stalls for ~0.2-0.8 s, and a
    # time-bounded loop makes those stalls a handful of calls among many rather than the average.
    return statistics.median(durations)


def make_images(batch: int, size: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, size=(batch, 3, size, size), dtype=np.uint8)
    return rng.random((batch, 3, size, size), dtype=np.float32).astype(dtype)


def server_flags(model: str, device: str, ledger: Path) -> list[str]:
    """The server's flags, read by the in-process side too (the host and port are LocalServer's)."""
    return [
        "--model",
        model,
        "--random-init",
        "--device",
        device,
        "--ledger",
        str(ledger),
        "--max-request-bytes",
        str(MAX_REQUEST_BYTES),
    ]


@contextmanager
def running_server(flags: list[str], log_path: Path) -> Iterator[BlackVIPClient]:
    """A live server subprocess and an SDK client for it; the server is stopped on any exit."""
    server = LocalServer(flags, log_path=log_path).start(timeout=HEALTH_TIMEOUT_S)
    client = BlackVIPClient(server.url, timeout=600.0)
    try:
        yield client
    except Exception:
        if server.proc is not None and server.proc.poll() is not None:
            # the client only sees "connection refused"; the cause is in the server's log
            log.error("server exited with %s; its log ends:\n%s", server.proc.returncode, server.log_tail())
        raise
    finally:
        client.close()
        server.stop()


def bench_model(model: str, args: argparse.Namespace, workdir: Path) -> list[Row]:
    flags = server_flags(model, args.device, workdir / f"{model}.sqlite3")
    log.info("%s: starting the server", model)
    with running_server(flags, workdir / f"{model}.log") as client:
        task_id = client.register_task(CLASS_NAMES, TEMPLATES).task_id
        # Same flags and seed as the server, so both sides run identical random weights.
        backend = ClipBackend.load(parse_server_args(flags, env={}))
        features = backend.encode_texts(CLASS_NAMES, TEMPLATES)
        rows = []
        for batch in args.batches:
            for dtype in args.dtypes:
                images = make_images(batch, backend.image_size, dtype)
                # Doubles as the warm-up of both sides: lazy setup (server: class embeddings,
                # allocator growth for a new shape) stays out of the timings.
                _check_same_logits(backend.logits(images, features).logits, client.logits(task_id, images))
                local = time_calls(
                    lambda im=images: backend.logits(im, features),
                    args.seconds,
                    args.min_reps,
                    args.max_seconds,
                )
                remote = time_calls(
                    lambda im=images: client.logits(task_id, im),
                    args.seconds,
                    args.min_reps,
                    args.max_seconds,
                )
                rows.append(Row(model, batch, dtype, batch / local, batch / remote))
                log.info(
                    "%s batch %d %s: in-process %.1f img/s, API %.1f img/s",
                    model,
                    batch,
                    dtype,
                    rows[-1].in_process,
                    rows[-1].api,
                )
    return rows


def _check_same_logits(local: np.ndarray, remote: np.ndarray) -> None:
    # A mismatch would mean the two sides do not run the same model, making the ratio meaningless.
    if local.shape != remote.shape or not np.allclose(local, remote, rtol=1e-3, atol=1e-3):
        raise RuntimeError("in-process and API logits differ: the two sides are not the same model")


def format_table(rows: Sequence[Row]) -> str:
    lines = [
        "| model | batch | dtype | in-process img/s | API img/s | API/in-process |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.batch} | {r.dtype} | {r.in_process:.1f} | {r.api:.1f} "
            f"| {r.api / r.in_process:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore"):  # a line per request would drown the progress lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="blackvip-bench-") as tmp:
        for model in args.models:
            rows.extend(bench_model(model, args, Path(tmp)))
    table = format_table(rows)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        log.info("table written to %s", args.out)
    log.info("done in %.0f s", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
