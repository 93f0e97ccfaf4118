"""The grid on Ray (``blackvip bench --executor ray [--ray-address ADDR]``): each (dataset, method, seed)
job is one Ray task that runs ``blackvip train`` as a subprocess of its worker, in the job's folder.

The skip/resume rules are the local executor's (:mod:`client.training.grid`), applied by the task when
it starts rather than when it is submitted: a task that Ray runs again after its worker died (a node
lost, a worker killed) finds the checkpoint its first attempt left and resumes from it, and one that
finds a summary has nothing left to do. The train subprocess is tied to its worker (on Linux it gets
SIGKILL when the worker dies), so a retried job never runs beside an orphan of its earlier attempt.

On a cluster every node needs this project installed and the grid's workdir (and ``--data``) at the
same path, on a filesystem they share: the jobs write their run folders there, and the driver reads
them for the table and plots. Imports neither torch nor Ray at import time: the driver needs Ray only
when it runs a grid, and torch never (it lives in the train subprocesses).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.training.grid import GridJob, job_flags
from client.training.rundir import RunDir

__all__ = ["RayExecutor", "run_train_job"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _tie_to_parent() -> Any:
    """A ``preexec_fn`` for the train subprocess: be killed if the worker that started it dies. The libc
    function is looked up here, in the worker; the child, between fork and exec, only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_train_job(flags: Sequence[str], out: str, command: Sequence[str] | None = None) -> int:
    """The body of one Ray task: skip a finished job, resume a stopped one, else start it; returns the
    train command's exit status (0 for a job already finished). ``command`` defaults to this worker's
    own interpreter running ``client.cli train``."""
    run = RunDir(Path(out))
    if run.finished():  # an earlier attempt finished it (the task was retried after it ended)
        return 0
    run.path.mkdir(parents=True, exist_ok=True)
    argv = [*(command or (sys.executable, "-m", "client.cli", "train")), *flags]
    if run.checkpoint.exists():
        argv.append("--resume")
    with run.log.open("ab") as output:
        done = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_tie_to_parent())
    return done.returncode


@dataclass(frozen=True)
class RayExecutor:
    """``address``: a running cluster's (``ray start --head`` prints it), or None for a Ray started in
    this process with ``local_cpus`` CPUs (the jobs that run at once). Each job takes ``cpus_per_job``
    of the cluster's CPUs; a job whose worker dies is run again up to ``max_retries`` times, resuming.
    ``init_options`` go to ``ray.init`` (tests: a small object store)."""

    flags: Sequence[str] = ()
    address: str | None = None
    local_cpus: int = 1
    cpus_per_job: float = 1.0
    max_retries: int = 3
    command: Sequence[str] | None = None
    init_options: dict[str, Any] = field(default_factory=dict)

    def run(self, jobs: Sequence[GridJob]) -> list[GridJob]:
        import ray  # only here: the driver needs Ray just to run a grid on it

        owned = not ray.is_initialized()
        if owned:
            options: dict[str, Any] = {"log_to_driver": False, **self.init_options}
            if self.address is None:
                options.setdefault("num_cpus", self.local_cpus)
                options.setdefault("include_dashboard", False)
            ray.init(address=self.address, **options)
        try:
            task = ray.remote(run_train_job).options(num_cpus=self.cpus_per_job, max_retries=self.max_retries)
            pending = [(job, self._submit(task, job)) for job in jobs]
            return [job for job, ref in pending if not self._succeeded(ray, job, ref)]
        finally:
            if owned:
                ray.shutdown()

    def _submit(self, task: Any, job: GridJob) -> Any:
        return task.remote(job_flags(job, self.flags), str(job.out.path), self.command)

    @staticmethod
    def _succeeded(ray: Any, job: GridJob, ref: Any) -> bool:
        try:
            code = ray.get(ref)
        except ray.exceptions.RayError as exc:  # its retries ran out, or the cluster went away
            log.error("FAILED %s on Ray: %s", job.name, exc)
            return False
        log.info("%s %s", "done" if code == 0 else f"FAILED ({code})", job.name)
        return code == 0
