"""Each method as data: which prompt it trains, with which optimiser and which server loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from client.training.config import ES_OPTIMIZERS, HYBRID, TrainConfig, optimizer_rule
from client.training.coordinator import Coordinator, build_encoder
from client.training.es import CMAES, ESThenSPSA
from client.training.prompters import (
    BarProgram,
    CoordinatorPrompt,
    NoPrompt,
    PaddingPrompt,
    PixelSpace,
    Prompter,
)
from client.training.subspace import LowRankSubspace, RandomSubspace, Reparametrisation, SubspaceOptimizer
from client.training.zo import RGF, SPSA, Optimizer
from client.training.zo_rules import Adam, GradientCorrection, NormClip, Plain, Sign, UpdateRule
from shared.protocol import InfoResponse, LossKind

__all__ = ["Method", "bar_inner_size", "build_method", "build_spsa", "build_zo", "method_input_size"]

# The projection's generator: a stream of its own, apart from the perturbations' (seeded with the
# run's seed) and the crops' (seed + 1), even across the seeds of one grid.
PROJECTION_SEED_OFFSET = 1_000_003
ES_SEED_OFFSET = 2_000_003  # the evolution strategies' normals: a numpy stream of their own


@dataclass
class Method:
    prompter: Prompter
    optimizer: Optimizer | None  # None: evaluation only (zero-shot)
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
    if config.method == "blackvip":
        encoder = build_encoder(config.encoder, config.encoder_path, seed=config.seed)
        prompter: Prompter = CoordinatorPrompt(Coordinator(encoder, size), space, config.p_eps)
        return _method(config, prompter, build_zo(config), LossKind.CROSS_ENTROPY)
    if config.method == "vp-spsa":
        prompter = PaddingPrompt(size, space, seed=config.seed)
        return _method(config, prompter, build_zo(config), LossKind.CROSS_ENTROPY)
    if config.method == "bar":
        rgf = RGF(
            init_lr=config.init_lr,
            min_lr=config.min_lr,
            total_steps=total_steps,  # the decay runs over the real run length, as the seed's
            q=config.q,
            beta=config.rgf_beta,
        )
        prompter = BarProgram(size, inner=bar_inner_size(size), seed=config.seed)
        return _method(config, prompter, rgf, LossKind.FOCAL)
    return Method(NoPrompt(), None, LossKind.CROSS_ENTROPY)


def build_zo(config: TrainConfig) -> Optimizer:
    """BlackVIP's and VP's optimiser: SPSA (:func:`build_spsa`) or an evolution strategy."""
    if config.strategy not in ES_OPTIMIZERS:
        return build_spsa(config)
    es = CMAES(
        popsize=config.es_popsize,
        r0=config.es_r0,
        seed=config.seed + ES_SEED_OFFSET,
        dim=None if config.strategy == "sep-cma-es" else config.es_dim,
        projection_seed=config.seed + PROJECTION_SEED_OFFSET,
    )
    return ESThenSPSA(es, build_spsa(config), config.es_steps) if config.strategy == HYBRID else es


def build_spsa(config: TrainConfig) -> SPSA:
    """SPSA with the settings' schedules, update rule and clipping (the defaults: the seed's SPSA-GC); a
    named optimiser brings its rule, its settings came with the preset."""
    rules: dict[str, UpdateRule] = {
        "spsa-gc": GradientCorrection(config.beta),
        "spsa": Plain(),
        "spsa-adam": Adam(config.beta, config.beta2),
        "spsa-sign": Sign(),
    }
    clip = {"none": None, "zip": NormClip(), "fixed": NormClip(config.clip_threshold)}[config.clip]
    return SPSA(
        a=config.a,
        c=config.c,
        alpha=config.alpha,
        gamma=config.gamma,
        o=config.o,
        q=config.q,
        rule=rules[optimizer_rule(config.optimizer)],
        clip=clip,
    )


def _method(config: TrainConfig, prompter: Prompter, optimizer: Optimizer, loss: LossKind) -> Method:
    """The method, its optimiser moved into a random subspace of the prompt's parameters if asked."""
    if not config.subspace_dim:
        return Method(prompter, optimizer, loss)
    d, seed = prompter.get_vector().numel(), config.seed + PROJECTION_SEED_OFFSET
    reparam: Reparametrisation = (
        LowRankSubspace(d, config.subspace_dim, config.subspace_rank, seed)
        if config.subspace_rank
        else RandomSubspace(d, config.subspace_dim, seed)
    )
    return Method(prompter, SubspaceOptimizer(optimizer, reparam), loss)
