"""The loss oracle against the real server on loopback (tiny real open_clip model): BAR sends focal,
candidates are applied without touching the prompter, and the answers are the server's own losses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from client import BlackVIPClient
from client.training.config import TrainConfig
from client.training.methods import build_method, method_input_size
from client.training.objective import RemoteLoss, to_wire
from shared.protocol import LossKind
from tests.helpers import ServerProcess, tiny_argv


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlackVIPClient]:
    folder = tmp_path_factory.mktemp("server")
    server = ServerProcess(tiny_argv(folder / "ledger.sqlite3"), log_path=folder / "server.log").start()
    try:
        with BlackVIPClient(server.url) as client:
            yield client
    finally:
        server.stop()


@pytest.mark.parametrize(("method", "kind"), [("bar", LossKind.FOCAL), ("blackvip", LossKind.CROSS_ENTROPY)])
def test_each_methods_oracle_sends_its_loss_and_leaves_the_prompter_alone(sdk, method, kind) -> None:
    info = sdk.info()
    task = sdk.register_task(["red", "green", "blue"], ["a photo of {}."]).task_id
    config = TrainConfig(data=Path("unused"), method=method, seed=3, focal_gamma=2.0)
    built = build_method(config, info, total_steps=10)
    assert built.loss_kind == kind
    remote = RemoteLoss(sdk, info, task, built.loss_kind, config.focal_gamma)
    size = method_input_size(method, info.image_size)
    pixels = torch.rand(6, 3, size, size, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    before = built.prompter.get_vector()
    candidates = [before + 0.3, before - 0.3]

    evaluations = remote.oracle(built.prompter, pixels, labels)(candidates)

    assert torch.equal(built.prompter.get_vector(), before)
    for vector, evaluation in zip(candidates, evaluations, strict=True):
        with torch.no_grad():
            prompted = built.prompter.apply_vector(vector, pixels, built.prompter.prepare(pixels))
        images = to_wire(prompted, "float32")
        by_kind = {
            loss: float(np.mean(sdk.loss(task, images, labels.numpy(), loss, 2.0).losses.astype(np.float64)))
            for loss in LossKind
        }
        assert by_kind[LossKind.FOCAL] < by_kind[LossKind.CROSS_ENTROPY]  # the two answers differ
        assert evaluation.loss == pytest.approx(by_kind[kind], rel=1e-6)
