"""``blackvip plan`` (and ``blackvip bench --dry-run``): what a grid of jobs will cost before it runs.

For each (dataset, method, seed): the run length in steps (the seed's epochs x batches per epoch), the
training images queried, the requests at the server's limits, the evaluation images and the cost at
the server's price. Sizes come from the dataset folders under ``--data`` when present (the few-shot
draw itself, so short classes count as they are), otherwise from the known sizes of the 14 benchmarks.
Imports neither torch nor the server: it runs anywhere the CLI parses.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from client._exceptions import BlackVIPError, DatasetError
from client.training.config import ES_OPTIMIZERS, HYBRID, SPSA_METHODS, TrainConfig, build_config
from shared.protocol import cost_of

__all__ = [
    "KNOWN_SIZES",
    "Limits",
    "PlanRow",
    "evaluations_per_step",
    "images_per_request",
    "images_per_step",
    "phases",
    "plan_job",
    "plan_rows",
    "render_plan",
]

REQUEST_OVERHEAD = 4096  # msgpack framing, field names, header slack (the oracle sizes requests by it)
_ITEMSIZE = {"float32": 4, "float16": 2, "uint8": 1}


@dataclass(frozen=True)
class KnownSize:
    classes: int
    test_images: int | None  # None: not known without the split file
    source: str


# Class counts and test-split sizes: CoOp's split files (CoOp paper, Table 6 of its appendix) for its 11;
# SVHN's official test set (BlackVIP's svhn_dl.py writes it whole); CLEVR's val scenes (BlackVIP's
# clevr.py uses them as the test set), 8 count classes (3-10 objects); Resisc45's test split is fixed by
# the seed authors' split_mlai_Resisc45.json, whose size is not published here.
KNOWN_SIZES: dict[str, KnownSize] = {
    "caltech101": KnownSize(100, 2465, "CoOp split"),
    "oxford_pets": KnownSize(37, 3669, "CoOp split"),
    "stanford_cars": KnownSize(196, 8041, "CoOp split"),
    "oxford_flowers": KnownSize(102, 2463, "CoOp split"),
    "food101": KnownSize(101, 30300, "CoOp split"),
    "fgvc_aircraft": KnownSize(100, 3333, "CoOp split"),
    "sun397": KnownSize(397, 19850, "CoOp split"),
    "dtd": KnownSize(47, 1692, "CoOp split"),
    "svhn": KnownSize(10, 26032, "SVHN test set"),
    "eurosat": KnownSize(10, 8100, "CoOp split"),
    "resisc45": KnownSize(45, None, "45 classes; test size set by split_mlai_Resisc45.json"),
    "clevr": KnownSize(8, 15000, "CLEVR v1.0 val scenes"),
    "ucf101": KnownSize(101, 3783, "CoOp split"),
    "imagenet": KnownSize(1000, 50000, "ImageNet val"),
}


@dataclass(frozen=True)
class Limits:
    """What the server allows and charges; ``source`` says where the numbers came from."""

    image_size: int = 224
    max_batch_images: int = 2048  # the server's defaults (server/settings.py)
    max_request_bytes: int = 64 * 2**20
    price_per_1k_images: float = 1.0
    source: str = "the server's default limits (no server asked)"
    price_per_1k_texts: float = 1.0  # the task registration's class x template texts


@dataclass(frozen=True)
class DataSize:
    classes: int
    train_images: int  # the few-shot train set
    eval_images: int | None  # the evaluation splits together; None: unknown
    source: str


@dataclass(frozen=True)
class PlanRow:
    dataset: str
    method: str
    seed: int
    size: DataSize
    steps: int
    train_images: int
    train_requests: int
    eval_images: int | None
    eval_requests: int | None
    cost: float | None


def images_per_request(
    image_size: int, wire_dtype: str, max_batch_images: int, max_request_bytes: int
) -> int:
    """Images in one request: the tighter of the server's image and byte limits. If not even one image
    fits in a request the server would answer 413 to every query: that is an error now, before any."""
    per_image = 3 * image_size**2 * _ITEMSIZE[wire_dtype] + 9  # + a label
    by_bytes = (max_request_bytes - REQUEST_OVERHEAD) // per_image
    if by_bytes < 1:
        room = max_request_bytes - REQUEST_OVERHEAD - 9
        fits = [d for d, size in _ITEMSIZE.items() if 3 * image_size**2 * size <= room]
        hint = f"send --wire-dtype {fits[0]}, or " if fits else ""
        raise BlackVIPError(
            f"one {image_size}x{image_size} {wire_dtype} image takes {per_image + REQUEST_OVERHEAD:,} bytes "
            f"with its request, over the server's max_request_bytes {max_request_bytes:,}: "
            f"{hint}ask for a larger --max-request-bytes on the server"
        )
    return min(max_batch_images, by_bytes)


def evaluations_per_step(config: TrainConfig) -> int:
    """Forwards per (first) step: SPSA 2q (BlackVIP, VP), an evolution strategy lambda (the hybrid: in its
    ES phase), RGF q + 1 (BAR), none for zero-shot."""
    if config.method in SPSA_METHODS and config.strategy in ES_OPTIMIZERS:
        return config.es_popsize
    return {"blackvip": 2 * config.q, "vp-spsa": 2 * config.q, "bar": config.q + 1}.get(config.method, 0)


def images_per_step(config: TrainConfig) -> int:
    """Training images a (first) step queries: a batch per forward."""
    return config.batch_size * evaluations_per_step(config)


def phases(config: TrainConfig, steps: int) -> list[tuple[int, int]]:
    """(steps, forwards per step) of each stretch of a ``steps``-step run: one, or the hybrid's ES
    generations (lambda forwards) then its SPSA-GC steps (2q)."""
    if config.method in SPSA_METHODS and config.strategy == HYBRID:
        es = min(steps, config.es_steps)
        return [(es, config.es_popsize), (steps - es, 2 * config.q)]
    return [(steps, evaluations_per_step(config))]


def steps_for_images(config: TrainConfig, images: int) -> int | None:
    """The steps after which a run has queried exactly ``images`` training images, or None if no step
    ends there."""
    steps = 0
    for length, forwards in phases(config, images):  # never more steps than images
        per_step = forwards * config.batch_size
        if not per_step:
            return None  # zero-shot: no step queries training images
        if images <= length * per_step:
            return steps + images // per_step if images % per_step == 0 else None
        images -= length * per_step
        steps += length
    return None


def data_size(config: TrainConfig, data_root: Path | None) -> DataSize:
    """The few-shot train size and the evaluation size, from the folders if present, else known sizes."""
    if data_root is not None and config.dataset is not None:
        measured = _measured_size(config, data_root)
        if measured is not None:
            return measured
    known = KNOWN_SIZES.get(config.dataset or "")
    if known is None:
        raise BlackVIPError(
            f"no size known for dataset {config.dataset!r}: pass --data with its folders (plan reads them)"
        )
    classes = _subsampled(known.classes, config.subsample_classes)
    evals = None if known.test_images is None or config.eval_splits != ["test"] else known.test_images
    if evals is not None and config.subsample_classes != "all":
        evals = None  # the share of test images in base/new classes is only known from the folders
    return DataSize(classes, config.shots * classes, evals, f"known sizes ({known.source})")


def _subsampled(classes: int, subsample: str) -> int:
    half = math.ceil(classes / 2)  # CoCoOp's rule: base is the first ceil(n/2) labels
    return {"all": classes, "base": half, "new": classes - half}[subsample]


def _measured_size(config: TrainConfig, data_root: Path) -> DataSize | None:
    from client.data.datasets import DATASETS, load_dataset
    from client.data.datasets.subsample import subsample_splits
    from client.data.fewshot import sample_few_shot

    if config.dataset not in DATASETS:
        return None
    try:
        splits = load_dataset(config.dataset, data_root)
    except DatasetError:
        return None  # not present here: fall back to the known sizes
    few = subsample_splits(sample_few_shot(splits, config.shots, config.seed, None), config.subsample_classes)
    chosen = {"train": few.train, "val": few.val, "test": few.test}
    evals = sum(len(chosen[split]) for split in config.eval_splits if split in chosen)
    return DataSize(len(few.class_names), len(few.train), evals, f"folders under {data_root}")


def plan_job(config: TrainConfig, size: DataSize, limits: Limits) -> PlanRow:
    """The arithmetic of one job, as client/training/loop.py spends it."""
    per_request = images_per_request(
        limits.image_size, config.wire_dtype, limits.max_batch_images, limits.max_request_bytes
    )
    steps = config.total_steps(size.train_images) if evaluations_per_step(config) else 0
    batch = min(config.batch_size, size.train_images)  # the sampler clamps the batch to the set
    train_images, train_requests = 0, 1  # + the registration
    for length, forwards in phases(config, steps):
        train_images += length * forwards * batch
        if config.in_flight > 1:  # the pipelined oracle sends at most one candidate per request
            train_requests += length * forwards * math.ceil(batch / per_request)
        else:
            train_requests += length * math.ceil(forwards * batch / per_request)
    evaluations = 1 + ((1 + steps // config.eval_every) if config.eval_every and steps else 0)
    eval_images = eval_requests = cost = None
    if size.eval_images is not None:
        eval_images = evaluations * size.eval_images
        eval_requests = evaluations * _eval_requests(size.eval_images, config.eval_batch, per_request)
        texts = size.classes * len(config.templates)  # encoded once, at registration
        cost = cost_of(
            train_images + eval_images, limits.price_per_1k_images, texts, limits.price_per_1k_texts
        )
    return PlanRow(
        config.dataset or str(config.data),
        config.method,
        config.seed,
        size,
        steps,
        train_images,
        train_requests,
        eval_images,
        eval_requests,
        cost,
    )


def _eval_requests(images: int, eval_batch: int, per_request: int) -> int:
    full, rest = divmod(images, eval_batch)
    return full * math.ceil(eval_batch / per_request) + (math.ceil(rest / per_request) if rest else 0)


def plan_rows(args: argparse.Namespace, limits: Limits) -> list[PlanRow]:
    rows = []
    for dataset in args.datasets:
        for method in args.methods:
            for seed in args.seeds:
                config = build_config(_job_settings(args, dataset, method, seed))
                rows.append(plan_job(config, data_size(config, args.data), limits))
    return rows


def _job_settings(args: argparse.Namespace, dataset: str, method: str, seed: int) -> dict[str, object]:
    given = {name: getattr(args, name, None) for name in ("shots", "steps", "epochs", "batch_size")}
    given["eval_every"] = getattr(args, "eval_every", None)
    given["subsample_classes"] = getattr(args, "subsample_classes", None)
    return {"data": args.data or Path("."), "dataset": dataset, "method": method, "seed": seed, **given}


def render_plan(rows: Iterable[PlanRow], limits: Limits) -> str:
    rows = list(rows)
    lines = [
        f"limits: {limits.image_size} px, at most {limits.max_batch_images:,} images and "
        f"{limits.max_request_bytes:,} bytes per request, {limits.price_per_1k_images:g} per 1,000 images "
        f"and {limits.price_per_1k_texts:g} per 1,000 texts ({limits.source})",
        "",
        "| dataset | method | seed | classes | train set | steps | training images | requests "
        "| eval images | cost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        requests = row.train_requests + (row.eval_requests or 0)
        more = "" if row.eval_requests is not None else "+"  # evaluation requests unknown
        lines.append(
            f"| {row.dataset} | {row.method} | {row.seed} | {row.size.classes:,} | {row.size.train_images:,} "
            f"| {row.steps:,} | {row.train_images:,} | {requests:,}{more} "
            f"| {_maybe(row.eval_images)} | {_money(row.cost)} |"
        )
    known = [row for row in rows if row.cost is not None]
    total_cost = sum(row.cost for row in known) if known else None
    lines.append(
        f"| **total** | | {len(rows)} jobs | | | {sum(r.steps for r in rows):,} "
        f"| {sum(r.train_images for r in rows):,} "
        f"| {sum(r.train_requests + (r.eval_requests or 0) for r in rows):,} "
        f"| {sum(r.eval_images or 0 for r in rows):,} | {_money(total_cost)}"
        f"{' (jobs with unknown eval size left out)' if len(known) < len(rows) else ''} |"
    )
    sources = sorted({f"{row.dataset}: {row.size.source}" for row in rows})
    return "\n".join(lines) + "\n\nsizes: " + "; ".join(sources) + "\n"


def _maybe(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.2f}"
