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
    parser.add_argument("--mnist", type=Path, help="folder with the MNIST idx files (loc-/biased-mnist)")
    parser.add_argument("--fake-scale", type=int, default=1, choices=[1, 4], help="Loc-MNIST distractor size")
    parser.add_argument("--train-rho", type=float, default=0.8, help="Biased MNIST train correlation")
    parser.add_argument("--test-rho", type=float, default=0.1, help="Biased MNIST test correlation")


def make_dataset(args: argparse.Namespace) -> Path:
    from digits.mnist import biased_mnist, load_mnist, loc_mnist, write_folder
    from digits.tasks import write_task_folder

    if args.kind in TASK_NAMES:
        return write_task_folder(args.kind, args.out, seed=0 if args.seed is None else args.seed)
    if args.kind not in KINDS:
        raise ConfigError(f"unknown dataset kind {args.kind!r}; choose one of {', '.join(KINDS)}")
    if args.mnist is None:
        raise ConfigError(f"{args.kind} is built from a local MNIST copy: pass --mnist DIR")
    seed = 1 if args.seed is None else args.seed
    for split, rho in (("train", args.train_rho), ("test", args.test_rho)):
        images, labels = load_mnist(args.mnist, split)
        if args.kind == "loc-mnist":
            built = loc_mnist(images, labels, args.fake_scale, seed=seed)
        else:
            built = biased_mnist(images, labels, rho, seed=seed)
        write_folder(built, labels, args.out / split)
    return args.out
