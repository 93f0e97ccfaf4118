"""Training jobs at every access level through a real server: each runs end to end under its own key,
the server's ledger charges exactly what the job's meter counted, on the route the level allows, and the
study script (bench/access_levels.py) runs and reports at miniature budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client import BlackVIPClient
from tests.helpers import ServerProcess, keyed_tiny_server, make_image_folder, train_with_key

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "logits": "k-logits",
    "loss": "k-loss",
    "probabilities": "k-prob",
    "top-k": "k-topk",
    "label": "k-label",
}
LEVEL_FLAGS = {
    "logits": [],
    "loss": ["--access-level", "loss"],
    "probabilities": ["--access-level", "probabilities"],
    "top-k": ["--access-level", "top-k", "--top-k", "2"],
    "label": ["--access-level", "label"],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with keyed_tiny_server(tmp_path_factory.mktemp("server"), KEYS.values()) as process:
        yield process


def _train(
    server: ServerProcess, data: Path, out: Path, key: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return train_with_key(server, data, out, key, "--batch-size", "6", "--steps", "2", *extra)


@pytest.mark.parametrize("level", list(LEVEL_FLAGS))
def test_a_job_trains_at_each_level_and_the_ledger_charges_what_it_counted(server, tmp_path, level) -> None:
    data = make_image_folder(tmp_path / "data")
    done = _train(server, data, tmp_path / "run", KEYS[level], *LEVEL_FLAGS[level])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    with BlackVIPClient(server.url, KEYS[level]) as api:
        usage = api.usage()
    by = usage.by_endpoint
    # training goes through /loss where the level reveals the loss, else through /logits with evaluation
    train_route = "loss" if level in ("logits", "loss") else "logits"
    assert by[train_route].images >= summary["train"]["images"] == 2 * 10 * 6  # 2 steps of q 5 pairs
    assert usage.total.images == summary["train"]["images"] + summary["eval"]["images"]
    if level == "loss":  # its /logits route is refused: evaluation goes through /loss too
        assert "logits" not in by or by["logits"].images == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["access_level"] == level


def test_the_server_refuses_the_loss_route_on_a_label_task(server) -> None:
    import numpy as np

    from client import AccessDeniedError
    from shared.access import Access, AccessLevel

    with BlackVIPClient(server.url, KEYS["label"]) as api:
        task = api.register_task(["a", "b"], access=Access(level=AccessLevel.LABEL))
        before = api.usage().total
        images = np.zeros((2, 3, api.info().image_size, api.info().image_size), dtype=np.uint8)
        with pytest.raises(AccessDeniedError, match="label"):
            api.loss(task.task_id, images, np.array([0, 1]))
        assert api.usage().total.images == before.images  # refused before any charge
        assert api.outputs(task.task_id, images).labels.shape == (2,)


def test_the_study_runs_each_level_under_its_own_key_and_reports(tmp_path: Path) -> None:
    workdir, out = tmp_path / "work", tmp_path / "results" / "al.md"
    argv = [
        sys.executable,
        str(ROOT / "bench" / "access_levels.py"),
        "--workdir",
        str(workdir),
        "--out",
        str(out),
    ]
    grid = ["--tasks", "loc-digits-1x1", "--methods", "blackvip", "--levels", "logits", "label"]
    done = subprocess.run(
        [*argv, *grid, "--seeds", "1", "--budgets", "1280", "2560"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| blackvip | ")]
    assert [row.split(" | ")[1] for row in rows] == ["logits", "label"]
    ledger_rows = [line for line in table.splitlines() if line.startswith("| blackvip-")]
    assert len(ledger_rows) == 2 and all(row.endswith("| yes |") for row in ledger_rows)
    for level in ("logits", "label"):
        ledger = json.loads(
            (workdir / "loc-digits-1x1" / f"blackvip-{level}" / "seed1" / "ledger.json").read_text()
        )
        route = "loss" if level == "logits" else "logits"
        assert ledger["by_endpoint"][route]["images"] >= 2560
    assert (tmp_path / "results" / "al-loc-digits-1x1.png").read_bytes()[:4] == b"\x89PNG"
