"""VP with the model in this process: the seed's unclamped pads and its white-box reference.

NOT BLACK-BOX. Everything here holds the frozen CLIP in its own process (``ClipBackend.load``), which
the client never does (it never imports open_clip). It exists for comparison tables only:

- :func:`train_spsa` with ``clamp=True`` is the client's VP (``PaddingPrompt``: pads clamped to valid
  pixels, what an image API forces) and with ``clamp=False`` the seed's VP (pads added in normalised
  space and fed to the model as they are). Same optimiser (the client's SPSA-GC), same batches, same
  model: the clamp is the only difference.
- :func:`train_whitebox` is the seed's white-box VP (trainer VPWB): backpropagation through the frozen
  model, SGD lr 40, momentum 0.9, no weight decay, batch 64, linear warm-up from 0.1 over the first
  10% then cosine (the seed's 100 of 1,000 epochs), cross-entropy, unclamped pads.

The pads are the client's (``client.training.prompters.PaddingPrompt``), so shapes and initialisation
are the same as a black-box run of the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from client.training.prompters import PaddingPrompt, PixelSpace
from client.training.zo import SPSA, Evaluation, LossOracle
from client.training.zo_rules import GradientCorrection
from server.serving.clip_model import ClipBackend

__all__ = ["InProcessClip", "SpsaSettings", "VpResult", "lr_at", "train_spsa", "train_whitebox", "zero_shot"]


class InProcessClip:
    """Differentiable logits of normalised images: the server's model and text features, no HTTP."""

    def __init__(self, backend: ClipBackend, class_names: Sequence[str], templates: Sequence[str]) -> None:
        self.model = backend.model
        self.space = PixelSpace(backend.mean, backend.std)
        # encode_texts runs under inference_mode; clone so autograd may save the tensor.
        self.text = backend.encode_texts(list(class_names), list(templates)).clone()
        self.scale = float(backend.model.logit_scale.exp())

    def logits(self, normalised: torch.Tensor) -> torch.Tensor:
        features = F.normalize(self.model.encode_image(normalised).float(), dim=-1)
        return self.scale * features @ self.text.T


def prompted(clip: InProcessClip, prompter: PaddingPrompt, frame: torch.Tensor, pixels: torch.Tensor,
             clamp: bool) -> torch.Tensor:  # fmt: skip
    """The model's input for ``pixels`` in [0, 1]: image + pads in normalised space, clamped to the
    normalised image of [0, 1] (the client's VP) or not (the seed's)."""
    normalised = clip.space.normalise(pixels) + frame
    return clip.space.clip(normalised) if clamp else normalised


def _frame_of(prompter: PaddingPrompt, vector: torch.Tensor) -> torch.Tensor:
    prompter.set_vector(vector)
    return prompter.frame()


@dataclass(frozen=True)
class SpsaSettings:
    """The client's vp-spsa defaults (client/training/presets.toml)."""

    a: float = 10.0
    c: float = 0.01
    alpha: float = 0.4
    gamma: float = 0.1
    o: float = 1.0
    q: int = 5
    beta: float = 0.9
    batch: int = 128


@dataclass(frozen=True)
class VpResult:
    method: str
    seed: int
    steps: int
    train_loss: float  # the last step's
    test_accuracy: float


def _batches(n: int, batch: int, steps: int, seed: int) -> list[torch.Tensor]:
    """Index batches, a fresh permutation per epoch, drop_last, as the client's sampler does."""
    generator, out = torch.Generator().manual_seed(seed + 1), []
    while len(out) < steps:
        order = torch.randperm(n, generator=generator)
        out.extend(order[i : i + batch] for i in range(0, n - batch + 1, batch))
    return out[:steps]


def _oracle(clip: InProcessClip, prompter: PaddingPrompt, pixels: torch.Tensor, labels: torch.Tensor,
            clamp: bool) -> LossOracle:  # fmt: skip
    def evaluate(candidates: Sequence[torch.Tensor]) -> list[Evaluation]:
        # All candidates in one forward: 3x faster on CPU than one forward each, same losses.
        with torch.no_grad():
            inputs = [prompted(clip, prompter, _frame_of(prompter, v), pixels, clamp) for v in candidates]
            logits = clip.logits(torch.cat(inputs)).split(len(pixels))
        return [
            Evaluation(float(F.cross_entropy(out, labels)), float((out.argmax(1) == labels).float().mean()))
            for out in logits
        ]

    return evaluate


def accuracy(clip: InProcessClip, prompter: PaddingPrompt, images: torch.Tensor, labels: torch.Tensor,
             clamp: bool) -> float:  # fmt: skip
    """Test accuracy with the prompt as trained (clamped only where training clamped)."""
    with torch.no_grad():
        frame, hits = prompter.frame(), 0
        for start in range(0, len(images), 250):
            pixels = images[start : start + 250].float() / 255.0
            logits = clip.logits(prompted(clip, prompter, frame, pixels, clamp))
            hits += int((logits.argmax(1) == labels[start : start + 250]).sum())
    return hits / len(images)


def train_spsa(clip: InProcessClip, data: tuple[torch.Tensor, ...], steps: int, seed: int, clamp: bool,
               settings: SpsaSettings = SpsaSettings()) -> VpResult:  # fmt: skip
    """VP trained by SPSA-GC; ``data`` = (train uint8 images, labels, test images, labels)."""
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(seed)
    prompter = PaddingPrompt(train_x.shape[-1], clip.space, seed=seed)
    s = settings
    spsa = SPSA(s.a, s.c, s.alpha, s.gamma, s.o, s.q, rule=GradientCorrection(s.beta))
    params, generator, loss = prompter.get_vector(), torch.Generator().manual_seed(seed), math.nan
    for index in _batches(len(train_x), s.batch, steps, seed):
        pixels = train_x[index].float() / 255.0
        result = spsa.step(params, _oracle(clip, prompter, pixels, train_y[index], clamp), generator)
        params, loss = result.params, result.loss
    prompter.set_vector(params)
    name = "vp-spsa clamped (client)" if clamp else "vp-spsa unclamped (seed)"
    return VpResult(name, seed, steps, loss, accuracy(clip, prompter, test_x, test_y, clamp))


def zero_shot(clip: InProcessClip, data: tuple[torch.Tensor, ...]) -> VpResult:
    """The test accuracy with no pads (all zero): what every VP run starts from before its random init."""
    train_x, _, test_x, test_y = data
    prompter = PaddingPrompt(train_x.shape[-1], clip.space, seed=0)
    prompter.set_vector(torch.zeros_like(prompter.get_vector()))
    test_accuracy = accuracy(clip, prompter, test_x, test_y, clamp=False)
    return VpResult("zero-shot (no pads)", 0, 0, math.nan, test_accuracy)


def lr_at(step: int, total: int, base: float = 40.0, warmup_lr: float = 0.1) -> float:
    """The seed's VPWB schedule, per step: warm-up over the first 10% (``warmup_lr`` at step 0, then
    base * step / warmup), then cosine from ``base`` counted from the end of the warm-up (as Dassl's
    warm-up wrapper starts its successor then)."""
    warmup = max(1, total // 10)
    if step < warmup:
        return warmup_lr if step == 0 else base * step / warmup
    return 0.5 * base * (1.0 + math.cos(math.pi * (step - warmup) / total))


def train_whitebox(clip: InProcessClip, data: tuple[torch.Tensor, ...], steps: int, seed: int,
                   batch: int = 64) -> VpResult:  # fmt: skip
    """The seed's white-box VP: gradients through the model, SGD(lr 40, momentum 0.9), batch 64."""
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(seed)
    prompter = PaddingPrompt(train_x.shape[-1], clip.space, seed=seed)
    optimiser = torch.optim.SGD(prompter.trainable(), lr=lr_at(0, steps), momentum=0.9, weight_decay=0.0)
    loss = math.nan
    for step, index in enumerate(_batches(len(train_x), batch, steps, seed)):
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, steps)
        pixels = train_x[index].float() / 255.0
        logits = clip.logits(prompted(clip, prompter, prompter.frame(), pixels, clamp=False))
        objective = F.cross_entropy(logits, train_y[index])
        optimiser.zero_grad()
        objective.backward()
        optimiser.step()
        loss = objective.item()
    return VpResult("vp white-box (seed, NOT black-box)", seed, steps, loss,
                    accuracy(clip, prompter, test_x, test_y, clamp=False))  # fmt: skip
