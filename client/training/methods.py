"""Each method as data: which prompt it trains, with which optimiser and which server loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from client.training.config import TrainConfig
from client.training.coordinator import Coordinator, build_encoder
from client.training.prompters import (
    BarProgram,
    CoordinatorPrompt,
    NoPrompt,
    PaddingPrompt,
    PixelSpace,
    Prompter,
)
from client.training.zo import RGF, SPSA
from shared.protocol import InfoResponse, LossKind

__all__ = ["Method", "bar_inner_size", "build_method", "method_input_size"]


@dataclass
class Method:
    prompter: Prompter
    optimizer: SPSA | RGF | None  # None: evaluation only (zero-shot)
    loss_kind: LossKind


def bar_inner_size(image_size: int) -> int:
    """BAR's image inside the frame: the seed's INPUT.SIZE 194 in a 224 frame, scaled, kept even."""
    return 2 * round(194 * image_size / 224 / 2)


def method_input_size(method: str, image_size: int) -> int:
    """The size the method's images are read at: BAR reads them straight at its inner size (the seed's
    transforms resize/crop to 194 px, bicubic), the others at the server's input size."""
    return bar_inner_size(image_size) if method == "bar" else image_size


def build_method(config: TrainConfig, info: InfoResponse, total_steps: int) -> Method:
    torch.manual_seed(config.seed)  # decoder and prompt initialisations are part of the run's seed
    space = PixelSpace(info.mean, info.std)
    size = info.image_size
    spsa = SPSA(
        a=config.a,
        c=config.c,
        alpha=config.alpha,
        gamma=config.gamma,
        o=config.o,
        q=config.q,
        beta=config.beta,
        gradient_correction=config.optimizer == "spsa-gc",
    )
    if config.method == "blackvip":
        encoder = build_encoder(config.encoder, config.encoder_path, seed=config.seed)
        prompter: Prompter = CoordinatorPrompt(Coordinator(encoder, size), space, config.p_eps)
        return Method(prompter, spsa, LossKind.CROSS_ENTROPY)
    if config.method == "vp-spsa":
        return Method(PaddingPrompt(size, space, seed=config.seed), spsa, LossKind.CROSS_ENTROPY)
    if config.method == "bar":
        rgf = RGF(
            init_lr=config.init_lr,
            min_lr=config.min_lr,
            total_steps=total_steps,  # the decay runs over the real run length, as the seed's
            q=config.q,
            beta=config.rgf_beta,
        )
        return Method(BarProgram(size, inner=bar_inner_size(size), seed=config.seed), rgf, LossKind.FOCAL)
    return Method(NoPrompt(), None, LossKind.CROSS_ENTROPY)
