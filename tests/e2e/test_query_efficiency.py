"""bench/query_efficiency.py at miniature budgets: it starts its own toy-digits server, runs each variant
under a key of its own, records what the ledger charged each job, and reports accuracy at every budget
from the jobs' evaluations; run again, it reuses the finished jobs and charges nothing more."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from client.training.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]
BUDGETS = ("2560", "5120")  # 2 and 4 steps of the seed's 1,280 images, 8 and 16 of batch 32's 320


def _bench(workdir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(ROOT / "bench" / "query_efficiency.py"), "--workdir", str(workdir)]
    return subprocess.run(
        [*argv, "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def _test_accuracy(run: RunDir, images: int) -> float:
    return next(
        p["accuracy"] for p in run.eval_lines() if (p["split"], p["train_images"]) == ("test", images)
    )


def test_variants_run_through_the_server_and_the_ledger_counts_each_job(tmp_path: Path) -> None:
    workdir, out = tmp_path / "work", tmp_path / "results" / "qe.md"
    grid = ("--variants", "seed", "zeroshot", "b32", "--seeds", "1", "2", "--budgets", *BUDGETS)
    weights = tmp_path / "other-weights.pt"  # --checkpoint: the server holds the weights it names
    weights.write_bytes((ROOT / "server" / "weights" / "toy-digits.pt").read_bytes())
    done = _bench(workdir, out, *grid, "--checkpoint", str(weights), "--note", "Which weights: a copy.")
    assert done.returncode == 0, done.stderr[-3000:]
    task = workdir / "loc-digits-1x1"
    runs = {(v, s): RunDir(task / v / f"seed{s}") for v in ("seed", "b32") for s in (1, 2)}
    for (variant, _), run in runs.items():
        summary = run.read_summary()
        batch = 128 if variant == "seed" else 32
        assert summary.train.images == 5120 and summary.train.forwards == 5120 // batch
        ledger = json.loads((run.path / "ledger.json").read_text())
        assert ledger["by_endpoint"]["loss"]["images"] == summary.train.images  # the ledger = the meter
        assert ledger["by_endpoint"]["loss"]["requests"] == summary.train.requests - 1  # - registration
        assert ledger["by_endpoint"]["logits"]["images"] == summary.eval.images
        # evaluations at 0 and at each budget, on val and test
        points = {(p["split"], p["train_images"]) for p in run.eval_lines()}
        assert points == {(split, images) for split in ("val", "test") for images in (0, 2560, 5120)}
    keys = {json.loads((run.path / "ledger.json").read_text())["key_id"] for run in runs.values()}
    assert len(keys) == 4  # one key per job
    zero = RunDir(task / "zeroshot" / "seed1").read_summary()
    assert zero.train.images == 0 and not (task / "zeroshot" / "seed2").exists()

    table = out.read_text()
    assert table.startswith("Which weights: a copy.\n")
    assert "Served: toy-digits (checkpoint:other-weights.pt)." in table
    row = next(line for line in table.splitlines() if line.startswith("| b32 |"))
    accuracy = [_test_accuracy(runs["b32", s], 5120) for s in (1, 2)]  # fractions, as the report rounds them
    cell = f"{100 * statistics.mean(accuracy):.1f} ± {100 * statistics.stdev(accuracy):.1f}"
    assert "| 2 | q 5, batch 32, a 0.01, spsa-gc | 10 |" in row and cell in row
    assert "not run" in row  # the default budgets beyond 5,120 images
    assert (tmp_path / "results" / "qe-loc-digits-1x1.png").read_bytes()[:4] == b"\x89PNG"

    ledger_before = (runs["seed", 1].path / "ledger.json").read_text()
    again = _bench(workdir, out, *grid)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to run" in again.stderr
    assert (runs["seed", 1].path / "ledger.json").read_text() == ledger_before  # nothing charged again


def test_lengthen_resumes_finished_jobs_to_the_larger_budget_as_a_straight_run_ends(tmp_path: Path) -> None:
    grid = ("--variants", "seed", "--seeds", "1")
    short, straight = tmp_path / "short", tmp_path / "straight"
    assert _bench(short, tmp_path / "s.md", *grid, "--budgets", BUDGETS[0]).returncode == 0
    assert _bench(straight, tmp_path / "t.md", *grid, "--budgets", *BUDGETS).returncode == 0
    run, reference = (RunDir(root / "loc-digits-1x1" / "seed" / "seed1") for root in (short, straight))

    unchanged = _bench(short, tmp_path / "s.md", *grid, "--budgets", *BUDGETS)  # without --lengthen
    assert unchanged.returncode == 0 and "0 to run" in unchanged.stderr
    assert run.read_summary().train.images == 2560

    longer = _bench(short, tmp_path / "s.md", *grid, "--budgets", *BUDGETS, "--lengthen")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "lengthening 1 finished jobs to 5120 images" in longer.stderr
    assert run.read_summary(run.path / "summary-2560.json").steps == 2  # kept aside
    summary = run.read_summary()
    assert (summary.steps, summary.train.images) == (4, 5120)
    ledger = json.loads((run.path / "ledger.json").read_text())
    assert ledger["by_endpoint"]["loss"]["images"] == 5120  # charged once for each image, resume included

    def trajectory(r: RunDir) -> tuple[list, list]:
        losses = [(m["step"], m["loss"]) for m in r.metric_lines()]
        evals = [(e["split"], e["train_images"], e["accuracy"], e["loss"]) for e in r.eval_lines()]
        return losses, evals

    assert trajectory(run) == trajectory(reference)  # bit-identical to the job run to 5,120 at once
