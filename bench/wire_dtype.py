"""The wire dtype's effect on learning (issue 11, part c): BlackVIP on one digit task, the same seeds
and settings, the prompted images sent as float32, float16 or uint8, through a real server.

The uint8 quantum is 1/255 ~ 0.0039 of the pixel range; SPSA's two perturbed prompts of a step differ
by about ``c_k`` times the prompt's sensitivity, so rounding to uint8 may flatten the finite difference
the gradient estimate is built from. This measures it: test accuracy after ``--steps`` steps.

    python bench/wire_dtype.py                   # 3 dtypes x 3 seeds x 300 steps, toy-digits server
    python bench/wire_dtype.py --steps 20 --seeds 1

Finished jobs are reused and a stopped one resumes, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from client.local_server import local_server
from client.training.config import TrainConfig, build_config
from client.training.grid import GridJob, InProcessExecutor, finished_summaries, plan_variants, run_grid
from client.training.rundir import Summary
from digits.tasks import write_task_folder

DTYPES = ("float32", "float16", "uint8")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/wire_dtype.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an existing server (default: start toy-digits locally)")
    parser.add_argument("--task", default="loc-digits-1x1")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-wire-dtype"))
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[GridJob]:
    """A BlackVIP job per wire dtype and seed, in WORKDIR/<task>/<dtype>/seed<S>."""
    return plan_variants(args.workdir, args.task, "blackvip", args.dtypes, args.seeds)


def job_config(args: argparse.Namespace, url: str, data: Path, job: GridJob) -> TrainConfig:
    settings = {"url": url, "dataset": job.dataset, "data": data, "out": job.out.path, "seed": job.seed}
    return build_config({**settings, "steps": args.steps, "wire_dtype": job.variant})


def render(args: argparse.Namespace, zero_shot: float, summaries: dict[str, list[Summary]]) -> str:
    lines = [
        f"BlackVIP on {args.task}, {args.steps} steps (the task's preset: batch 128, q 5), "
        f"seeds {args.seeds}; test split. Zero-shot: {100 * zero_shot:.1f}%.",
        "",
        "| wire dtype | seeds | test accuracy (%) | per-seed (%) | gain over zero-shot (points) | bytes |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for dtype, runs in summaries.items():
        accuracy = [100 * run.evaluations["test"]["accuracy"] for run in runs]
        spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
        mean, seeds = statistics.mean(accuracy), ", ".join(f"{a:.1f}" for a in accuracy)
        lines.append(
            f"| {dtype} | {len(runs)} | {mean:.1f} ± {spread:.1f} | {seeds} | "
            f"{mean - 100 * zero_shot:+.1f} | {runs[0].train.bytes:,} |"
        )
    return "\n".join(lines) + "\n"


def quantum_check(url: str, task: str, data: Path, steps: int) -> str:
    """How much of SPSA's finite difference survives each wire dtype: the two perturbed prompts
    (w + c_k d, w - c_k d) of the first and the last step's c_k, on one training batch at the seed's
    initial prompt, sent through ``to_wire``: the share of pixel values that differ between the two."""
    import torch

    from client import BlackVIPClient
    from client.data.images import load_image_folder
    from client.training.methods import build_method
    from client.training.objective import to_wire
    from client.training.zo import spsa_perturbation

    with BlackVIPClient(url) as api:
        info = api.info()
    config = build_config({"dataset": task, "data": data, "steps": steps})
    method = build_method(config, info, steps)
    images = load_image_folder(data, "train", info.image_size)
    pixels = images.pixels[:128].float() / 255.0
    prompter, vector = method.prompter, method.prompter.get_vector()
    direction = spsa_perturbation(vector.numel(), torch.Generator().manual_seed(0))
    lines = ["| c_k (step) | dtype | pixel values that differ between w + c_k d and w - c_k d | mean abs |",
             "|---|---|---:|---:|"]  # fmt: skip
    with torch.no_grad():
        prepared = prompter.prepare(pixels)
        for step in (1, steps):
            c_k = config.c / step**config.gamma
            plus = prompter.apply_vector(vector + c_k * direction, pixels, prepared)
            minus = prompter.apply_vector(vector - c_k * direction, pixels, prepared)
            for dtype in DTYPES:
                a, b = (torch.from_numpy(to_wire(x, dtype).astype("float32")) for x in (plus, minus))
                scale = 255.0 if dtype == "uint8" else 1.0
                differ = float((a != b).float().mean())
                lines.append(f"| {c_k:.4f} ({step}) | {dtype} | {100 * differ:.1f}% | "
                             f"{float((a - b).abs().mean()) / scale:.5f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run_all(args: argparse.Namespace, url: str, data: Path) -> tuple[float, dict[str, list[Summary]], str]:
    from client.training.loop import run_job

    zero = run_job(build_config({"url": url, "dataset": args.task, "data": data, "method": "zeroshot",
                                 "out": args.workdir / args.task / "zeroshot"}))  # fmt: skip
    jobs = plan(args)
    run_grid(jobs, InProcessExecutor(partial(job_config, args, url, data)))
    summaries: dict[str, list[Summary]] = {}
    for job, summary in finished_summaries(jobs).items():
        summaries.setdefault(job.label, []).append(summary)
    quantum = quantum_check(url, args.task, data, args.steps)
    return float(zero.summary.evaluations["test"]["accuracy"]), summaries, quantum


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = write_task_folder(args.task, args.workdir / "data" / args.task)
    if args.url:
        zero, summaries, quantum = run_all(args, args.url, data)
    else:
        with local_server(args.workdir) as url:
            zero, summaries, quantum = run_all(args, url, data)
    table = render(args, zero, summaries) + "\n" + quantum
    if args.out:
        args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
