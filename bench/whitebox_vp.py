"""VP three ways on a digit task, with toy-digits IN THIS PROCESS (not black-box; bench/vp_inprocess.py):

- ``vp-spsa clamped (client)``: the client's VP, pads clamped to valid pixels (what the API takes);
- ``vp-spsa unclamped (seed)``: the seed's VP, pads added in normalised space and never clamped;
- ``vp white-box (seed, NOT black-box)``: the seed's VPWB, backpropagation, SGD lr 40, batch 64.

    python bench/whitebox_vp.py --task biased-digits-08      # ~11 min a task on 2 CPUs (300 steps)

bench/results/vp_deviation.md holds this run on loc-digits-1x1 and biased-digits-08.

The first two differ only in the clamp (same optimiser, seed, batches, model): their gap is the
deviation docs/reproducing.md ("Known deviations") quotes. Few-shot: 16 images a class of the task's
train split (digits/tasks.py, task seed 0); accuracy on its 1,000-image test split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from vp_inprocess import InProcessClip, SpsaSettings, VpResult, train_spsa, train_whitebox, zero_shot

from digits.sources import NUMBER_WORDS
from digits.tasks import build_split
from server.flags import parse_args
from server.serving.clip_model import ClipBackend


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--task", default="loc-digits-1x1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=300, help="SPSA steps (batch 128, q 5)")
    parser.add_argument("--whitebox-steps", type=int, default=300, help="SGD steps (batch 64)")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def _data(task: str, shots: int) -> tuple[torch.Tensor, ...]:
    train_x, train_y = build_split(task, "train", seed=0, per_class=shots)
    test_x, test_y = build_split(task, "test", seed=0)
    return tuple(torch.from_numpy(a) for a in (train_x, train_y, test_x, test_y))


def _table(results: list[VpResult]) -> list[str]:
    lines = ["| method | seed | steps | last train loss | test accuracy |", "|---|---:|---:|---:|---:|"]
    lines += [
        f"| {r.method} | {r.seed} | {r.steps} | {r.train_loss:.4f} | {100 * r.test_accuracy:.1f}% |"
        for r in results
    ]
    lines += ["", "| method | mean test accuracy | stdev | per seed |", "|---|---:|---:|---|"]
    for method in dict.fromkeys(r.method for r in results):
        accs = [100 * r.test_accuracy for r in results if r.method == method]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| {method} | {statistics.mean(accs):.1f}% | {spread:.1f} | "
                     f"{', '.join(f'{a:.1f}' for a in accs)} |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        settings = parse_args(["--device", "cpu", "--ledger", str(Path(tmp) / "ledger.sqlite3")])
        backend = ClipBackend.load(settings)  # toy-digits, fp32 on CPU
    clip = InProcessClip(backend, NUMBER_WORDS, ["a photo of the number {}."])
    data = _data(args.task, args.shots)
    spsa = SpsaSettings(alpha=0.5)  # the task's vp-spsa preset: a 10, c 0.01, alpha 0.5, beta 0.9
    results, started = [zero_shot(clip, data)], time.perf_counter()
    for seed in args.seeds:
        for clamp in (True, False):
            results.append(train_spsa(clip, data, args.steps, seed, clamp, spsa))
            print(results[-1], file=sys.stderr, flush=True)
        results.append(train_whitebox(clip, data, args.whitebox_steps, seed))
        print(results[-1], file=sys.stderr, flush=True)
    command = "python bench/whitebox_vp.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = [
        f"# VP: clamped vs unclamped pads, and the white-box reference ({args.task})",
        "",
        "NOT BLACK-BOX: toy-digits runs in the benchmark's own process (bench/vp_inprocess.py).",
        f"{args.shots} shots a class (task seed 0), test split of 1,000 images, CPU, fp32; "
        f"{time.perf_counter() - started:.0f} s in all.",
        "",
        "    " + command,
        "",
        *_table(results),
    ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
