"""`blackvip train` against the real server on loopback: every method, the meter against the
server's usage, a killed job resumed to the same parameters, and a server that goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from client import BlackVIPClient
from client.training.config import TrainConfig
from client.training.methods import build_method
from client.training.rundir import RunDir
from shared.protocol import InfoResponse
from tests.helpers import ServerProcess, make_image_folder, tiny_argv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("server")
    process = ServerProcess(tiny_argv(folder / "ledger.sqlite3"), log_path=folder / "server.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"))


def blackvip(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "BLACKVIP_API_KEY": ""},
    )


def train_argv(server: ServerProcess, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--url",
        server.url,
        "--data",
        str(data),
        "--out",
        str(out),
        "--shots",
        "8",
        "--batch-size",
        "12",
        *extra,
    ]


@pytest.mark.parametrize(("method", "per_step"), [("blackvip", 10), ("vp-spsa", 10), ("bar", 6)])
def test_each_method_trains_and_counts_what_it_spends(server, dataset, tmp_path, method, per_step) -> None:
    with BlackVIPClient(server.url) as api:
        before = api.usage().total
    done = blackvip(*train_argv(server, dataset, tmp_path / method, "--method", method, "--steps", "6"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["steps"] == 6 and summary["stopped_because"] == "steps"
    assert summary["train"]["images"] == 6 * per_step * 12
    assert summary["train"]["requests"] == 6 + 1  # one request per step, plus the task registration
    assert summary["train"]["forwards"] == 6 * per_step  # one perturbed batch of 12 each
    lines = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "accuracy", "train_images", "forwards", "requests", "cost", "wall_time"} <= set(lines[0])
    assert [line["forwards"] for line in lines] == [step * per_step for step in range(1, 7)]
    assert all(line["train_images"] == 12 * line["forwards"] for line in lines)
    with BlackVIPClient(server.url) as api:
        after = api.usage().total
    spent = summary["train"]["images"] + summary["eval"]["images"]
    assert after.images - before.images == spent
    assert after.requests - before.requests == summary["train"]["requests"] + summary["eval"]["requests"]
    saved = json.loads((tmp_path / method / "config.json").read_text())
    assert saved["config"]["method"] == method and "api_key" not in saved["config"]
    initial, trained = _initial_and_trained_vectors(tmp_path / method, saved)
    assert initial.numel() > 0 and not torch.equal(initial, trained)  # the optimiser moved the prompt


def _initial_and_trained_vectors(run_dir: Path, saved: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt's trainable vector as the run built it (same seed, same config) and as it ended."""
    config = TrainConfig(**saved["config"])
    info = InfoResponse(**saved["server"])
    method = build_method(config, info, total_steps=config.steps or 0)
    initial = method.prompter.get_vector()
    method.prompter.load_state_dict(RunDir(run_dir).load_checkpoint()["prompter"], strict=False)
    return initial, method.prompter.get_vector()


def test_budget_in_images_stops_before_overspending(server, dataset, tmp_path) -> None:
    done = blackvip(
        *train_argv(server, dataset, tmp_path / "budget", "--steps", "100", "--budget-images", "500")
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["stopped_because"] == "budget_images"
    assert summary["train"]["images"] == 4 * 120 <= 500  # 120 images a step; a fifth would overspend


def test_zeroshot_eval_and_training_lowers_the_loss(server, dataset, tmp_path) -> None:
    zero = blackvip("eval", "--url", server.url, "--data", str(dataset), "--out", str(tmp_path / "zs"))
    assert zero.returncode == 0, zero.stderr
    assert json.loads(zero.stdout)["train"]["images"] == 0
    done = blackvip(
        *train_argv(
            server,
            dataset,
            tmp_path / "long",
            "--steps",
            "60",
            "--a",
            "0.5",
            "--c",
            "0.05",
            "--batch-size",
            "24",
        )
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (tmp_path / "long" / "metrics.jsonl").read_text().splitlines()]
    first = sum(line["loss"] for line in lines[:10]) / 10
    last = sum(line["loss"] for line in lines[-10:]) / 10
    assert last < first


def test_killed_job_resumes_to_the_same_parameters(server, dataset, tmp_path) -> None:
    common = ("--steps", "30", "--checkpoint-every", "4", "--batch-size", "24", "--seed", "3")
    straight = blackvip(*train_argv(server, dataset, tmp_path / "straight", *common))
    assert straight.returncode == 0, straight.stderr

    argv = [sys.executable, "-m", "client.cli", *train_argv(server, dataset, tmp_path / "killed", *common)]
    job = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 10):
        assert time.monotonic() < deadline and job.poll() is None, "job ended before it could be killed"
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    killed_at = RunDir(tmp_path / "killed").load_checkpoint()["step"]
    assert 8 <= killed_at < 30

    resumed = blackvip(*train_argv(server, dataset, tmp_path / "killed", *common, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    final = RunDir(tmp_path / "killed").load_checkpoint()
    reference = RunDir(tmp_path / "straight").load_checkpoint()
    assert final["step"] == reference["step"] == 30
    for name, tensor in reference["prompter"].items():
        assert torch.equal(final["prompter"][name], tensor), name
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 31))  # the killed run's extra lines were dropped


@pytest.mark.parametrize(
    "options",
    [
        ("--optimizer", "spsa-adam", "--a", "0.001", "--beta2", "0.99"),
        ("--optimizer", "spsa-sign", "--a", "0.001", "--clip", "fixed", "--clip-threshold", "5"),
        ("--optimizer", "spsa", "--clip", "zip", "--subspace-dim", "64", "--subspace-rank", "2"),
        ("--q", "1", "--subspace-dim", "32"),
    ],
)
def test_each_optimiser_option_trains_through_the_server_and_resumes_exactly(
    server, dataset, tmp_path, options
) -> None:
    """Two steps, then two more with --resume, end where four straight steps do (prompt, optimiser
    state, forwards); the prompt moved."""
    common = (*options, "--seed", "2", "--checkpoint-every", "1")
    straight = blackvip(*train_argv(server, dataset, tmp_path / "straight", *common, "--steps", "4"))
    assert straight.returncode == 0, straight.stderr
    first = blackvip(*train_argv(server, dataset, tmp_path / "split", *common, "--steps", "2"))
    assert first.returncode == 0, first.stderr
    second = blackvip(*train_argv(server, dataset, tmp_path / "split", *common, "--steps", "4", "--resume"))
    assert second.returncode == 0, second.stderr
    reference, resumed = (RunDir(tmp_path / name).load_checkpoint() for name in ("straight", "split"))
    per_step = 2 * int(options[options.index("--q") + 1]) if "--q" in options else 10
    assert reference["step"] == resumed["step"] == 4
    assert reference["forwards"] == resumed["forwards"] == 4 * per_step
    for name, tensor in reference["prompter"].items():
        assert torch.equal(resumed["prompter"][name], tensor), name
    assert _same(resumed["optimizer"], reference["optimizer"])
    summary = json.loads(second.stdout)
    assert summary["train"]["forwards"] == 4 * per_step
    assert summary["train"]["images"] == 12 * 4 * per_step
    saved = json.loads((tmp_path / "split" / "config.json").read_text())
    initial, trained = _initial_and_trained_vectors(tmp_path / "split", saved)
    assert not torch.equal(initial, trained)


def _same(left: object, right: object) -> bool:
    """Equal state: the same keys, tensors equal to the bit, other values equal."""
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, torch.Tensor) and isinstance(right, torch.Tensor):
        return torch.equal(left, right)
    return left == right


def test_existing_run_is_not_overwritten_without_resume(server, dataset, tmp_path) -> None:
    assert blackvip(*train_argv(server, dataset, tmp_path / "once", "--steps", "2")).returncode == 0
    again = blackvip(*train_argv(server, dataset, tmp_path / "once", "--steps", "2"))
    assert again.returncode == 1 and "--resume" in again.stderr
    changed = blackvip(
        *train_argv(server, dataset, tmp_path / "once", "--steps", "2", "--a", "0.2", "--resume")
    )
    assert changed.returncode == 1 and "a: 0.01 -> 0.2" in changed.stderr


def test_server_going_away_stops_with_a_resumable_checkpoint(dataset, tmp_path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    server = ServerProcess(tiny_argv(ledger), log_path=tmp_path / "server.log").start()
    argv = [
        sys.executable,
        "-m",
        "client.cli",
        *train_argv(
            server,
            dataset,
            tmp_path / "job",
            "--steps",
            "400",
            "--batch-size",
            "24",
            "--max-wait-seconds",
            "2",
        ),
    ]
    job = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "job" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.01)
    server.kill9()
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 3, stderr
    assert "unreachable" in stderr and "--resume" in stderr
    stopped_at = RunDir(tmp_path / "job").load_checkpoint()["step"]
    assert stopped_at >= 5

    restarted = ServerProcess(tiny_argv(ledger), log_path=tmp_path / "server.log", port=server.port).start()
    try:  # a resume may change the stopping point
        resumed = blackvip(
            *train_argv(
                restarted,
                dataset,
                tmp_path / "job",
                "--steps",
                str(stopped_at + 3),
                "--batch-size",
                "24",
                "--max-wait-seconds",
                "2",
                "--resume",
            )
        )
    finally:
        restarted.stop()
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == stopped_at + 3
