"""``--optimizer cma-es`` through the command line and a real server: each generation's lambda batches are
what the server's ledger charges, and a run resumed from its step-2 checkpoint ends bit-identical to a
straight one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from client import BlackVIPClient
from client.training.rundir import RunDir
from tests.helpers import ServerProcess, keyed_tiny_server, make_image_folder, train_with_key

KEYS = {"straight": "k-es-straight", "resumed": "k-es-resumed"}
BATCH, POPSIZE = 6, 4
ES = ("--optimizer", "cma-es", "--es-dim", "20", "--es-popsize", str(POPSIZE), "--checkpoint-every", "2")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with keyed_tiny_server(tmp_path_factory.mktemp("server"), KEYS.values()) as process:
        yield process


def train(server: ServerProcess, data: Path, out: Path, key: str, *extra: str) -> dict:
    done = train_with_key(server, data, out, key, "--batch-size", str(BATCH), *ES, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_cma_es_charges_lambda_batches_a_step_and_resumes_bit_identically(server, tmp_path) -> None:
    data = make_image_folder(tmp_path / "data")
    straight = train(server, data, tmp_path / "straight", KEYS["straight"], "--steps", "3")
    train(server, data, tmp_path / "resumed", KEYS["resumed"], "--steps", "2")
    resumed = train(server, data, tmp_path / "resumed", KEYS["resumed"], "--steps", "3", "--resume")
    for name, summary in (("straight", straight), ("resumed", resumed)):
        assert summary["steps"] == 3
        assert summary["train"]["images"] == 3 * POPSIZE * BATCH  # a batch per candidate
        assert summary["train"]["forwards"] == 3 * POPSIZE
        with BlackVIPClient(server.url, KEYS[name]) as api:
            assert api.usage().by_endpoint["loss"].images == summary["train"]["images"]
    one, two = RunDir(tmp_path / "straight"), RunDir(tmp_path / "resumed")
    final_one, final_two = one.load_checkpoint(), two.load_checkpoint()
    assert final_one["config"]["optimizer"] == "cma-es"
    for name, tensor in final_one["prompter"].items():
        assert torch.equal(final_two["prompter"][name], tensor), name
    assert [line["loss"] for line in one.metric_lines()] == [line["loss"] for line in two.metric_lines()]
    assert [line["lr"] for line in one.metric_lines()] == [line["lr"] for line in two.metric_lines()]
