"""TensorBoard scalars of a run (``--tensorboard``), in ``RUN/tensorboard/``.

The run's JSON lines are the record; the event file is a view of them. TensorBoard event files can only
be appended to, so a killed run's points after its last checkpoint would stay and repeat when the resumed
run writes those steps again. Instead, every start deletes the folder's event files and writes the points
again from ``metrics.jsonl``, ``evals.jsonl`` and ``summary.json`` (already cut back to the checkpoint by
:meth:`RunDir.truncate_after`), then appends this session's points to that one file. The folder thus never
holds a step twice, even if a start is killed half way (it then holds fewer, until the next start).

Tags: ``train/loss``, ``train/accuracy``, ``train/lr``, ``train/images``, ``train/requests``,
``train/cost`` at every step; ``<split>/accuracy``, ``<split>/loss``, ``<split>/macro_f1`` at every
evaluation (the step it was made at; one point per step). Wall times are the run's working seconds
(``wall_time`` of the metric lines) after an origin, so TensorBoard's relative axis reads the same after a
resume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from client.training.rundir import RunDir

__all__ = ["EVAL_METRICS", "TRAIN_METRICS", "ScalarLog", "open_scalars"]

log = logging.getLogger(__name__)

# metric line key -> tag under train/
TRAIN_METRICS = {
    "loss": "loss",
    "accuracy": "accuracy",
    "lr": "lr",
    "train_images": "images",
    "requests": "requests",
    "cost": "cost",
}
EVAL_METRICS = ("accuracy", "loss", "macro_f1")


class ScalarLog:
    """Writes a run's points; with no writer (``--tensorboard`` off) every call does nothing."""

    def __init__(self, writer: Any | None = None, origin: float = 0.0) -> None:
        self._writer, self._origin = writer, origin
        self._evaluated: set[tuple[str, int]] = set()
        self._wall_times: dict[int, float] = {0: 0.0}  # step -> working seconds, for evaluation points

    def step(self, line: Mapping[str, Any]) -> None:
        """One metric line (as written to metrics.jsonl); flushed, as that file is."""
        self._write_step(line)
        self.flush()

    def evaluations(self, step: int, results: Mapping[str, Mapping[str, Any]]) -> None:
        """The evaluations (split -> metrics) made at ``step``; a split already written at that step
        (a final evaluation on an evaluation step, a resumed finished run) is not written again."""
        for split, metrics in results.items():
            self._write_evaluation(step, split, metrics)
        self.flush()

    def replay(self, run: RunDir) -> None:
        """Write the points the run's files hold: its steps, its evaluations and its final evaluation."""
        for line in run.metric_lines():
            self._write_step(line)
        for line in run.eval_lines():
            self._write_evaluation(int(line["step"]), line["split"], line)
        if run.finished():
            summary = run.read_summary()
            for split, metrics in summary.evaluations.items():
                self._write_evaluation(summary.steps, split, metrics)
        self.flush()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ScalarLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _write_step(self, line: Mapping[str, Any]) -> None:
        step = int(line["step"])
        self._wall_times[step] = float(line["wall_time"])
        for key, tag in TRAIN_METRICS.items():
            self._scalar(f"train/{tag}", line[key], step)

    def _write_evaluation(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        if (split, step) in self._evaluated:
            return
        self._evaluated.add((split, step))
        for name in EVAL_METRICS:
            if metrics.get(name) is not None:  # macro_f1 is None at access level loss
                self._scalar(f"{split}/{name}", metrics[name], step)

    def _scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is None:
            return
        seconds = self._wall_times.get(step, max(self._wall_times.values()))
        self._writer.add_scalar(tag, value, global_step=step, walltime=self._origin + seconds)


def open_scalars(run: RunDir, enabled: bool, elapsed: float) -> ScalarLog:
    """The run's scalar log, its event file rewritten from the run's files; ``elapsed``: the run's
    working seconds so far (the origin of its wall times is now minus those)."""
    if not enabled:
        return ScalarLog()
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package, not TensorFlow

    folder = run.tensorboard
    folder.mkdir(parents=True, exist_ok=True)
    stale = _event_files(folder)
    for path in stale:  # first: a start killed from here on leaves fewer points, never repeated ones
        path.unlink()
    # flush_secs: step() and evaluations() flush themselves; the writer's own timer is not needed.
    writer = SummaryWriter(log_dir=str(folder), max_queue=1000, flush_secs=3600)
    scalars = ScalarLog(writer, origin=time.time() - elapsed)
    scalars.replay(run)
    log.info("TensorBoard scalars in %s (%d earlier event file(s) rewritten)", folder, len(stale))
    return scalars


def _event_files(folder: Path) -> list[Path]:
    # TensorBoard reads every file whose name holds "tfevents".
    return sorted(path for path in folder.iterdir() if path.is_file() and "tfevents" in path.name)
