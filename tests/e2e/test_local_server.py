"""A program that runs a local server (``blackvip demo``, the benchmarks) and is sent SIGTERM (``kill``,
``timeout``, a batch scheduler) stops its server on the way out instead of leaving it running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]

HOLDS_A_SERVER = """
import sys, time
from pathlib import Path
from client.local_server import local_server
with local_server(Path(sys.argv[1])) as url:
    print(url, flush=True)
    time.sleep(600)
"""


def _processes_naming(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_sigterm_stops_the_program_and_its_server(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.sqlite3")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDS_A_SERVER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        assert holder.stdout is not None
        url = holder.stdout.readline().strip()
        assert httpx.get(url + "/v1/health", timeout=10).status_code == 200
        assert len(_processes_naming(ledger)) == 1  # the server, started with --ledger in tmp_path
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(timeout=60) == 128 + signal.SIGTERM
        assert _processes_naming(ledger) == []  # stopped (and waited for) before the program exited
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/v1/health", timeout=2)
    finally:
        holder.kill()
        for pid in _processes_naming(ledger):
            os.kill(pid, signal.SIGKILL)
