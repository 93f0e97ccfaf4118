"""Training settings: one object built from defaults < dataset preset < config file < CLI flags
(< env for the server address and key), saved with every run and checkpoint."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.access import LEVELS_WITH_LOSS, MAX_DECIMALS, MAX_NOISE_STD, Access, AccessLevel

__all__ = [
    "DEFAULT_STEPS",
    "ES_OPTIMIZERS",
    "HYBRID",
    "LOW_RANK_ROWS",
    "FROM_EVALUATION",
    "NO_FLAG",
    "RESUMABLE",
    "ENCODERS",
    "METHODS",
    "RULES",
    "SPSA_METHODS",
    "ConfigError",
    "TrainConfig",
    "batches_per_epoch",
    "build_config",
    "dataset_presets",
    "base_optimizer",
    "optimizer_rule",
    "preset_values",
]

METHODS = ("blackvip", "vp-spsa", "bar", "zeroshot")
SPSA_METHODS = ("blackvip", "vp-spsa")
RULES = ("spsa-gc", "spsa", "spsa-adam", "spsa-sign")  # SPSA's step rules (client/training/zo_rules.py)
HYBRID = "cma-es-spsa-gc"  # CMA-ES for --es-steps steps, then SPSA-GC from its mean
ES_OPTIMIZERS = ("cma-es", "sep-cma-es", HYBRID)  # evolution strategies (client/training/es.py)
ENCODERS = ("random-pooled", "scratch", "mae", "vit-sup", "dino-rn50")
LOW_RANK_ROWS = 8  # rows of the low-rank subspace's matrix: ZIP's 8 context tokens (here: no torch)
DEFAULT_STEPS = 5000  # when neither --steps nor --epochs nor a preset sets the length
PRESETS_FILE = Path(__file__).parent / "presets.toml"


class ConfigError(ValueError):
    """Settings that cannot describe a runnable job."""


# Field tags, read back with TrainConfig.tagged(): every list of field names derives from the class.
RESUMABLE = "resumable"  # may differ on --resume: where the run stops, or plumbing (not the trajectory)
FROM_EVALUATION = "from_evaluation"  # ``eval --run`` takes these from its own flags, not the checkpoint
NO_FLAG = "no_flag"  # not a generated training flag (the common --url/--api-key flags set them)


def _tags(*tags: str) -> dict[str, Any]:
    return {"json_schema_extra": {"tags": list(tags)}}


ENCODER_HELP = (
    "the Coordinator's encoder. The seed's dataset presets (--dataset: the 14 benchmarks, loc_mnist_*, "
    "biased_mnist_*) set mae, the seed's (MAE ViT-B/16: the hub or --encoder-path). Without one of them "
    "the default is random-pooled, an offline toy encoder that is not the seed's, because mae needs "
    "weights that a machine without the hub lacks; pass --encoder mae for the seed's Coordinator"
)


ACCESS_HELP = (
    "what the task's answers reveal: logits and loss train on the server's /loss; probabilities, top-k "
    "(with --top-k) and label train on losses the client computes from them (cross-entropy, so not bar)"
)


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field("http://127.0.0.1:8000", **_tags(RESUMABLE, FROM_EVALUATION, NO_FLAG))
    api_key: str | None = Field(None, exclude=True, **_tags(NO_FLAG))  # never written to disk
    method: Literal["blackvip", "vp-spsa", "bar", "zeroshot"] = "blackvip"
    dataset: str | None = None  # a preset name (templates and hyperparameters)
    # ROOT with train/ [val/] test/ image folders
    data: Path = Field(**_tags(FROM_EVALUATION))
    out: Path = Field(Path("runs/job"), **_tags(RESUMABLE))
    shots: int = Field(16, ge=1)
    augment: bool | None = None  # random resized crop + flip; default: on for benchmark datasets only
    # where sampled few-shot splits are kept (default ~/.cache/...)
    fewshot_cache: Path | None = Field(None, **_tags(RESUMABLE))
    seed: int = 1
    templates: list[str] = ["a photo of a {}."]
    # CoCoOp's base-to-new split of the classes
    subsample_classes: Literal["all", "base", "new"] = Field("all", **_tags(FROM_EVALUATION))
    # stopping: whichever comes first. The length is --steps if given, else --epochs as the seed counts
    # them (epochs x batches per epoch, drop_last), else DEFAULT_STEPS.
    steps: int | None = Field(None, ge=0, **_tags(RESUMABLE))
    epochs: int | None = Field(None, ge=0, **_tags(RESUMABLE))
    budget_images: int | None = Field(None, ge=1, **_tags(RESUMABLE))  # training images queried
    budget_cost: float | None = Field(None, gt=0, **_tags(RESUMABLE))
    batch_size: int = Field(128, ge=1)
    # SPSA / SPSA-GC (blackvip, vp-spsa)
    a: float = 0.01
    c: float = 0.01
    alpha: float = 0.4
    gamma: float = 0.1
    o: float = 1.0
    q: int = Field(5, ge=1)
    beta: float = 0.9  # SPSA-GC's momentum ("moms"); spsa-adam's first-moment decay
    # the step SPSA takes with its estimate g (client/training/zo_rules.py): spsa-gc the seed's, spsa g,
    # spsa-adam ZO-Adam, spsa-sign ZO-signSGD; or a named optimiser: a rule with the settings measured with
    # it ([optimizers.NAME] in presets.toml)
    # or an evolution strategy (client/training/es.py): cma-es in a random --es-dim subspace, sep-cma-es
    # (diagonal) over every value, cma-es-spsa-gc: cma-es for --es-steps steps, then spsa-gc
    optimizer: Literal[
        "spsa-gc",
        "spsa",
        "spsa-adam",
        "spsa-sign",
        "spsa-gc-q1",
        "cma-es",
        "sep-cma-es",
        "cma-es-spsa-gc",
        "cma-es-d500",
    ] = "spsa-gc"
    beta2: float = Field(0.999, ge=0, lt=1)  # spsa-adam's second-moment decay
    # clip the norm of g: "zip" at sqrt(values trained), ZIP's rule; "fixed" at --clip-threshold
    clip: Literal["none", "zip", "fixed"] = "none"
    clip_threshold: float | None = Field(None, gt=0)
    # train z in a random subspace, w = w_0 + P z (client/training/subspace.py): its dimension, 0 = off
    subspace_dim: int = Field(0, ge=0)
    # ZIP's low-rank form of z within the subspace (U diag(s) V^T + b): its rank, 0 = off
    subspace_rank: int = Field(0, ge=0)
    # evolution strategies (--optimizer cma-es, sep-cma-es, cma-es-spsa-gc): cma-es's subspace dimension,
    # the first step's expected length r0 (sigma0 = r0 / sqrt(dimension searched)), the population lambda
    # (candidates a step, each a batch), and the hybrid's ES steps before SPSA-GC takes over
    es_dim: int = Field(500, ge=1)
    es_r0: float = Field(10.0, gt=0)
    es_popsize: int = Field(10, ge=2)
    es_steps: int = Field(0, ge=0)
    # Coordinator (blackvip)
    p_eps: float = 1.0
    # random-pooled: our offline toy encoder (pooled random conv + trigger); scratch: the seed's
    # coordinator_init; mae / vit-sup / dino-rn50: the seed's pretrained encoders (local folder or hub)
    encoder: Literal["random-pooled", "scratch", "mae", "vit-sup", "dino-rn50"] = Field(
        "random-pooled", description=ENCODER_HELP
    )
    encoder_path: Path | None = None
    # BAR
    init_lr: float = 5.0
    min_lr: float = 0.1
    rgf_beta: float = 0.01
    focal_gamma: float = 2.0
    # what the task's answers reveal (shared.access); part of the job: a resume may not change them
    access_level: Literal["logits", "loss", "probabilities", "top-k", "label"] = Field(
        "logits", description=ACCESS_HELP
    )
    top_k: int | None = Field(None, ge=1, le=1000, description="classes revealed at --access-level top-k")
    access_decimals: int | None = Field(
        None, ge=0, le=MAX_DECIMALS, description="the server rounds revealed scores to this many decimals"
    )
    access_noise_std: float | None = Field(
        None, gt=0, le=MAX_NOISE_STD, description="Gaussian noise the server adds to the logits"
    )
    # plumbing
    wire_dtype: Literal["float32", "float16", "uint8"] = "float32"
    # loss requests outstanding while the next candidate is built (1: one at a time); the results are
    # bit-identical either way, so a resume may change it
    in_flight: int = Field(1, ge=1, le=16, **_tags(RESUMABLE))
    checkpoint_every: int = Field(50, ge=1, **_tags(RESUMABLE))
    eval_batch: int = Field(256, ge=1, **_tags(RESUMABLE, FROM_EVALUATION))
    eval_splits: list[str] = Field(["test"], **_tags(RESUMABLE, FROM_EVALUATION))
    # steps between evaluations for the learning curve (0: only at the end)
    eval_every: int = Field(0, ge=0, **_tags(RESUMABLE))
    # how long to wait for a server that went away
    max_wait_seconds: float = Field(120.0, ge=0, **_tags(RESUMABLE))
    # TensorBoard scalars in RUN/tensorboard/ (a view of the run's lines, so a resume may switch it on)
    tensorboard: bool = Field(False, **_tags(RESUMABLE))

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if (self.clip == "fixed") != (self.clip_threshold is not None):
            raise ValueError("--clip-threshold goes with --clip fixed, and --clip fixed needs it")
        if self.subspace_rank and self.subspace_dim < LOW_RANK_ROWS:
            raise ValueError(
                f"--subspace-rank needs --subspace-dim of at least {LOW_RANK_ROWS} (its matrix's rows)"
            )
        self._es_consistent()
        if self.access_level == "top-k" and self.top_k is None:
            raise ValueError("--access-level top-k needs --top-k, the number of classes revealed")
        if self.access_level != "top-k" and self.top_k is not None:
            raise ValueError(f"--top-k is for --access-level top-k, not {self.access_level}")
        if self.method == "bar" and AccessLevel(self.access_level) not in LEVELS_WITH_LOSS:
            raise ValueError(
                f"bar trains on the focal loss, which only the server's /loss computes: --access-level "
                f"{self.access_level} refuses it (use logits or loss)"
            )
        return self

    @property
    def strategy(self) -> str:
        """What ``optimizer`` runs: a step rule or an evolution strategy (a named optimiser's ``rule``)."""
        return base_optimizer(self.optimizer)

    def _es_consistent(self) -> None:
        if self.strategy in ES_OPTIMIZERS and self.method not in SPSA_METHODS:
            raise ValueError(
                f"--optimizer {self.optimizer} trains {' and '.join(SPSA_METHODS)}, not {self.method}"
            )
        if self.strategy in ES_OPTIMIZERS and self.subspace_dim:
            raise ValueError(
                f"--optimizer {self.optimizer} has its own subspace (--es-dim): drop --subspace-dim"
            )
        if (self.strategy == HYBRID) != (self.es_steps > 0):
            raise ValueError(f"--es-steps goes with --optimizer {HYBRID}, and {HYBRID} needs it (>= 1)")

    def access(self) -> Access:
        """The access the job's task is registered at."""
        return Access(
            level=AccessLevel(self.access_level),
            k=self.top_k,
            decimals=self.access_decimals,
            noise_std=self.access_noise_std,
        )

    def saved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def tagged(cls, tag: str) -> frozenset[str]:
        """The names of the fields carrying ``tag`` (RESUMABLE, FROM_EVALUATION or NO_FLAG)."""
        return frozenset(
            name
            for name, info in cls.model_fields.items()
            if tag in (info.json_schema_extra or {}).get("tags", [])  # type: ignore[union-attr]
        )

    def total_steps(self, train_images: int) -> int:
        """The run's length in optimiser steps for a few-shot train set of ``train_images`` images."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return self.epochs * batches_per_epoch(train_images, self.batch_size)
        return DEFAULT_STEPS


def batches_per_epoch(train_images: int, batch_size: int) -> int:
    """The seed's loader (my_dassl build_data_loader): drop_last when the set holds a full batch,
    otherwise one short batch per epoch."""
    if train_images < 1:
        raise ConfigError("the few-shot train set is empty: no batch can be drawn")
    return max(1, train_images // batch_size)


def _load_presets() -> dict[str, Any]:
    with PRESETS_FILE.open("rb") as handle:
        return tomllib.load(handle)


def dataset_presets() -> list[str]:
    return sorted(_load_presets()["datasets"])


def preset_values(dataset: str | None, method: str, optimizer: str | None = None) -> dict[str, Any]:
    """The method's defaults, then the dataset's template/steps and its per-method values, then a named
    optimiser's settings for the method."""
    presets = _load_presets()
    values = dict(presets["defaults"].get(method, {}))
    if dataset is not None:
        if dataset not in presets["datasets"]:
            raise ConfigError(
                f"no preset for dataset {dataset!r}; known: {', '.join(sorted(presets['datasets']))}"
            )
        entry = presets["datasets"][dataset]
        values.update({k: v for k, v in entry.items() if k not in METHODS})
        values.update(entry.get(method, {}))
    if optimizer is not None and optimizer not in RULES and method in SPSA_METHODS:
        values.update(_named_optimizer(presets, optimizer, method))
    return values


def _named_optimizer(presets: dict[str, Any], optimizer: str, method: str) -> dict[str, Any]:
    entry = presets.get("optimizers", {}).get(optimizer)
    if entry is None:
        return {}  # not a name of ours: the settings' validation names the choices
    if method not in entry:
        measured = ", ".join(k for k in entry if k in METHODS)  # "results": where they were measured
        raise ConfigError(
            f"--optimizer {optimizer} has settings for {measured} only ({entry['results']}); "
            f"for {method} choose a step rule: {', '.join(RULES)}"
        )
    return dict(entry[method])


def base_optimizer(optimizer: str) -> str:
    """What an ``--optimizer`` runs: itself (a step rule or an evolution strategy), or a named optimiser's
    ``rule``."""
    if optimizer in RULES or optimizer in ES_OPTIMIZERS:
        return optimizer
    return str(_load_presets()["optimizers"][optimizer]["rule"])


def optimizer_rule(optimizer: str) -> str:
    """The step rule an ``--optimizer``'s SPSA stands on: :func:`base_optimizer`'s, or SPSA-GC for the
    evolution strategies (the hybrid's SPSA phase)."""
    base = base_optimizer(optimizer)
    return "spsa-gc" if base in ES_OPTIMIZERS else base


def build_config(cli: dict[str, Any], config_file: Path | None = None) -> TrainConfig:
    """``cli`` holds only the flags the user gave (None = not given)."""
    given = {k: v for k, v in cli.items() if v is not None}
    from_file = _read_config_file(config_file) if config_file else {}
    method = given.get("method", from_file.get("method", "blackvip"))
    dataset = given.get("dataset", from_file.get("dataset"))
    preset = preset_values(dataset, method, given.get("optimizer", from_file.get("optimizer")))
    user = {**from_file, **given}
    if "epochs" in user and "steps" not in user:
        preset.pop("steps", None)  # the user's --epochs beats a preset's step count; --steps beats both
    values = {**preset, **user}
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid training settings: {problems}") from exc


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return {key.replace("-", "_"): value for key, value in data.items()}
