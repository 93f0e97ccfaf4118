"""A run's folder, the one place that names its files.

::

    RUN/
      config.json       the run's settings and the server's /v1/info, written at every start
      checkpoint.pt     everything a resume needs (written atomically every --checkpoint-every steps)
      metrics.jsonl     one line per step: loss, accuracy, lr, training images, forwards, requests, cost,
                        wall time
      evals.jsonl       one line per evaluation during training: step, training images, split, metrics
      summary.json      the finished run: :class:`Summary`
      evaluation.json   ``blackvip eval --run RUN``: a :class:`Summary` of the evaluation
      job.log           ``blackvip bench``: the output of the job's ``blackvip train`` process(es)
      tensorboard/      ``--tensorboard``: the points of the files above as TensorBoard scalars
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from client.data.atomic import atomic_write_bytes, atomic_write_json

__all__ = ["RunDir", "Spend", "Summary"]


@dataclass(frozen=True)
class Spend:
    """What one client (training or evaluation) spent. ``forwards``: the perturbed batches the optimiser
    evaluated (one batch through the model each, ZIP's unit), for training; None for an evaluation and
    for a run written before they were counted."""

    requests: int
    images: int
    bytes: int
    cost: float
    forwards: int | None = None


@dataclass(frozen=True)
class Summary:
    method: str
    steps: int
    stopped_because: str
    first_loss: float | None
    last_loss: float | None
    train: Spend
    eval: Spend
    wall_time: float
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(**{**data, "train": Spend(**data["train"]), "eval": Spend(**data["eval"])})


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def evals(self) -> Path:
        return self.path / "evals.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def evaluation(self) -> Path:
        return self.path / "evaluation.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def log(self) -> Path:
        return self.path / "job.log"

    def finished(self) -> bool:
        return self.summary.exists()

    def write_config(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.config, data)

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        # torch is imported here, not at the top: a grid's parent process reads run folders without it.
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint, buffer.getvalue())
        return self.checkpoint

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint.exists():
            return None
        import torch

        # Our own files: they hold numpy RNG state and plain Python containers besides tensors.
        return torch.load(self.checkpoint, map_location="cpu", weights_only=False)

    def write_summary(self, summary: Summary, path: Path | None = None) -> Path:
        path = path or self.summary
        atomic_write_json(path, summary.to_json())
        return path

    def read_summary(self, path: Path | None = None) -> Summary:
        return Summary.from_json(json.loads((path or self.summary).read_text()))

    def metric_lines(self) -> list[dict[str, Any]]:
        return _read_lines(self.metrics)

    def eval_lines(self) -> list[dict[str, Any]]:
        return _read_lines(self.evals)

    def truncate_after(self, step: int) -> None:
        """Drop metric lines written after ``step`` (by a run that was killed), so steps never repeat."""
        for path in (self.metrics, self.evals):
            if path.exists():
                lines = path.read_text().splitlines()
                kept = [line for line in lines if line and json.loads(line)["step"] <= step]
                path.write_text("".join(line + "\n" for line in kept))


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
