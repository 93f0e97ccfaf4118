"""How long a running server takes to see a key change made by ``blackvip-server keys ...``.

For each ``--keys-refresh-s`` asked for, starts a tiny server (random weights, temp ledger) and runs
``--cycles`` rounds of: create a key through the admin command (in this process, on the same ledger
file), then poll ``/v1/info`` with it every 10 ms until it is answered 200; revoke it, then poll until
401. The delays are measured from the moment the admin command returned. Prints a markdown table:

| refresh s | create -> works: median, max | revoke -> 401: median, max |

    python bench/key_propagation.py                       # refresh 0.5 and 2 (the default), 8 cycles each
    python bench/key_propagation.py --refresh 1 --cycles 20
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from client.local_server import LocalServer
from server.admin import admin_main

__all__ = ["main"]


def _admin(ledger: Path, *argv: str) -> str:
    out = io.StringIO()
    if admin_main([*argv, "--ledger", str(ledger)], env={}, out=out) != 0:
        raise SystemExit(f"admin command failed: {argv}")
    return out.getvalue()


def _until(url: str, key: str, status: int, limit_s: float = 60.0) -> float:
    start = time.monotonic()
    while httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code != status:
        if time.monotonic() - start > limit_s:
            raise SystemExit(f"no {status} within {limit_s} s")
        time.sleep(0.01)
    return time.monotonic() - start


def measure(refresh_s: float, cycles: int, workdir: Path) -> tuple[list[float], list[float]]:
    ledger = workdir / f"ledger-{refresh_s}.sqlite3"
    argv = ["--model", "tiny-vit", "--random-init", "--device", "cpu", "--ledger", str(ledger),
            "--ledger-keys", "--keys-refresh-s", str(refresh_s)]  # fmt: skip
    server = LocalServer(argv, log_path=workdir / "server.log").start()
    created, revoked = [], []
    try:
        for cycle in range(cycles):
            record = json.loads(_admin(ledger, "keys", "create", "--label", f"bench-{cycle}", "--json"))
            created.append(_until(server.url + "/v1/info", record["key"], 200))
            _admin(ledger, "keys", "revoke", record["key_id"])
            revoked.append(_until(server.url + "/v1/info", record["key"], 401))
            time.sleep((cycle % 4) * refresh_s / 4)  # start the next round at another phase of the timer
    finally:
        server.stop()
    return created, revoked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refresh", type=float, nargs="+", default=[0.5, 2.0], help="--keys-refresh-s")
    parser.add_argument("--cycles", type=int, default=8)
    args = parser.parse_args(argv)
    print("| refresh s | create -> works: median, max (s) | revoke -> 401: median, max (s) |")
    print("|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for refresh_s in args.refresh:
            created, revoked = measure(refresh_s, args.cycles, Path(tmp))
            print(
                f"| {refresh_s:g} | {statistics.median(created):.2f}, {max(created):.2f} "
                f"| {statistics.median(revoked):.2f}, {max(revoked):.2f} |"
            )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
