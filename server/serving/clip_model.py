"""The frozen CLIP model: loading, text features, image features, logits and per-image losses.

Knows nothing of HTTP. Every forward pass runs under ``torch.inference_mode()`` and through one
``ModelGate``, so a device serves one model call at a time whatever the number of request threads, and
text encoding (in chunks) lets waiting image forwards go first. On CUDA, image
forwards run under autocast at ``--precision`` with channels_last inputs, or in float32 for a request
that asks ``precision: fp32`` (evaluation, as the seed tests in fp32); logits are always float32.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from server.serving.model_gate import ModelGate
from server.settings import ServerSettings

__all__ = [
    "MODEL_CONFIG_DIR",
    "OPENAI_TAGS",
    "ClipBackend",
    "ClipModel",
    "ForwardResult",
    "ModelLoadError",
    "VisualTower",
    "fill_unit_pixels",
    "per_image_loss",
    "uses_quick_gelu",
]

log = logging.getLogger(__name__)

_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
MODEL_CONFIG_DIR = Path(__file__).parents[1] / "model_configs"  # server/model_configs: package data
# open_clip's tag for OpenAI's own CLIP weights, which were trained with QuickGELU; open_clip's
# ViT-B-16/ViT-B-32 configs use nn.GELU and only warn on the mismatch, so we ask for QuickGELU.
OPENAI_TAGS = frozenset({"openai"})


def uses_quick_gelu(settings: ServerSettings) -> bool:
    """The activation the weights were trained with: --quick-gelu on/off, or auto (an OpenAI tag)."""
    if settings.quick_gelu != "auto":
        return settings.quick_gelu == "on"
    return not settings.random_init and settings.pretrained in OPENAI_TAGS


class ModelLoadError(RuntimeError):
    """The model named in the settings cannot be built; the message says what to do instead."""


class VisualTower(Protocol):
    """The image tower, as far as the server touches it (``ClipModel`` says why it is spelled out)."""

    preprocess_cfg: dict[str, Any]  # size, mean, std: set by open_clip.create_model from the config

    def to(self, *, memory_format: torch.memory_format) -> torch.nn.Module: ...


class ClipModel(Protocol):
    """What the server uses of an open_clip CLIP model. open_clip ships no type hints, and torch types
    every attribute of a Module as ``Tensor | Module``; this names what each one really is."""

    visual: VisualTower
    logit_scale: torch.Tensor

    def encode_image(self, image: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> torch.nn.Module: ...


@dataclass(frozen=True)
class ForwardResult:
    logits: np.ndarray  # (N, C) float32
    batch_passes: int


class ClipBackend:
    """A loaded open_clip model plus what clients may know about its input."""

    def __init__(self, model: ClipModel, tokenizer, device: torch.device, settings: ServerSettings):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.forward_batch = settings.max_forward_batch
        self.text_chunk = settings.text_encode_chunk
        # Autocast and channels_last pay off on CUDA only; bf16 is 5-30x slower on these CPUs.
        self.precision = settings.precision if device.type == "cuda" else "fp32"
        self.channels_last = device.type == "cuda"
        if self.precision != settings.precision:
            log.warning("--precision %s is for CUDA; serving fp32 on %s", settings.precision, device)
        if self.channels_last:
            model.visual.to(memory_format=torch.channels_last)
        self.warmup_s = 0.0
        cfg = model.visual.preprocess_cfg
        self.image_size = int(cfg["size"][0]) if isinstance(cfg["size"], (tuple, list)) else int(cfg["size"])
        self.mean = tuple(float(v) for v in cfg["mean"])
        self.std = tuple(float(v) for v in cfg["std"])
        self._mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        self.gate = ModelGate()  # one model call at a time on this device, image forwards first
        self.image_calls = 0  # logits calls served, so a replay can be shown to run no model

    @classmethod
    def load(cls, settings: ServerSettings) -> ClipBackend:
        import open_clip  # ~7 s; only the process that serves a model pays it

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        if settings.model not in open_clip.list_models():
            raise ModelLoadError(
                f"unknown model {settings.model!r}: use an open_clip name (open_clip.list_models()) "
                f"or a config in {MODEL_CONFIG_DIR}"
            )
        device = resolve_device(settings.device)
        torch.manual_seed(settings.seed)
        model = _create_model(open_clip, settings, device)
        model.eval().requires_grad_(False)
        tokenizer = open_clip.get_tokenizer(settings.model)
        backend = cls(model, tokenizer, device, settings)
        backend.warm_up(settings.max_forward_batch if device.type == "cuda" else 2)
        log.info(
            "loaded %s (%s) on %s at %s: %d px input, warm-up %.2f s",
            settings.model,
            settings.weights_label,
            device,
            backend.precision,
            backend.image_size,
            backend.warmup_s,
        )
        return backend

    def warm_up(self, rows: int) -> None:
        """One image forward before serving: CUDA's first call (kernels, autotuning) is slow."""
        started = time.perf_counter()
        self.image_features(torch.zeros((rows, 3, self.image_size, self.image_size)))
        self.image_calls = 0
        self.warmup_s = time.perf_counter() - started

    def encode_texts(self, class_names: list[str], templates: list[str]) -> torch.Tensor:
        """Class embeddings (C, D): the normalised mean over templates, as CLIP's zero-shot recipe.
        Texts go through the model ``text_chunk`` at a time, each chunk tokenised before it asks for
        the model (tokenising needs no model), so image forwards wait for one chunk at most."""
        texts = [template.format(name) for name in class_names for template in templates]
        chunks = []
        for start in range(0, len(texts), self.text_chunk):
            tokens = self.tokenizer(texts[start : start + self.text_chunk])  # (n, context) int64
            with self.gate.text(), torch.inference_mode():
                chunks.append(self.model.encode_text(tokens.to(self.device)))
        features = F.normalize(torch.cat(chunks).float(), dim=-1)
        features = features.view(len(class_names), len(templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1)

    def lane(self, precision: str) -> str | None:
        """The forward lane of a request's precision (``RequestPrecision``'s value): None, the serving
        path, when it asks "serving" or when serving is fp32 already (they share forwards then)."""
        if precision not in ("serving", "fp32"):
            raise ValueError(f"unknown request precision {precision!r}")
        return None if precision == "serving" or self.precision == "fp32" else "fp32"

    def image_features(self, pixels: torch.Tensor, lane: str | None = None) -> torch.Tensor:
        """Normalised image features (N, D) float32 on the CPU, for pixels (N, 3, S, S) float32 in
        [0, 1] on the CPU, at the serving precision or at ``lane`` ("fp32": no autocast). ``pixels`` is
        normalised in place: callers pass a buffer of their own."""
        precision = self.precision if lane is None else lane
        with self.gate.image(), torch.inference_mode():
            self.image_calls += 1
            chunk = pixels.to(self.device, non_blocking=True).sub_(self._mean).div_(self._std)
            if self.channels_last:
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            dtype = _AUTOCAST.get(precision)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                features = self.model.encode_image(chunk)
            return F.normalize(features.float(), dim=-1).cpu()

    def logits_from_features(self, features: torch.Tensor, text_features: torch.Tensor) -> np.ndarray:
        """exp(logit_scale) * image . class (N, C) float32: per request, after a shared forward."""
        with torch.inference_mode():
            scale = self.model.logit_scale.exp().float().cpu()
            return (scale * features @ text_features.cpu().T).numpy().astype(np.float32, copy=False)

    def logits(
        self,
        images: np.ndarray,
        text_features: torch.Tensor,
        observe: Callable[[float, int, int], None] | None = None,
        lane: str | None = None,
    ) -> ForwardResult:
        """Logits (N, C) for images (N, 3, H, W) in [0, 1] (or uint8), one forward per
        ``forward_batch`` images of this request alone (the path without the batcher), at ``lane``'s
        precision (``image_features``). ``observe``
        hears (seconds, images, padding 0) of each forward, as the batcher's observer does."""
        outputs = []
        for start in range(0, len(images), self.forward_batch):
            piece = images[start : start + self.forward_batch]
            pixels = torch.empty((len(piece), *piece.shape[1:]), dtype=torch.float32)
            fill_unit_pixels(pixels, piece)
            started = time.perf_counter()
            outputs.append(self.image_features(pixels, lane))
            if observe is not None:
                observe(time.perf_counter() - started, len(piece), 0)
        logits = self.logits_from_features(torch.cat(outputs), text_features)
        return ForwardResult(logits=logits, batch_passes=math.ceil(len(images) / self.forward_batch))


def fill_unit_pixels(dest: torch.Tensor, images: np.ndarray) -> None:
    """Write images (uint8, or float in [0, 1]) into the float32 CPU tensor ``dest`` as [0, 1] values:
    one pass straight from the (read-only) wire buffer, converting on the way, no staging copy."""
    np.copyto(dest.numpy(), images, casting="safe")
    if images.dtype == np.uint8:
        dest.div_(255.0)  # a division, not * (1/255): the same bits as the unbatched path always had


def per_image_loss(
    logits: np.ndarray, labels: np.ndarray, kind: str, focal_gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image cross-entropy or focal loss (N,) float32, and correctness (N,) bool."""
    logits_t = torch.from_numpy(logits)
    labels_t = torch.from_numpy(labels.astype(np.int64))
    ce = F.cross_entropy(logits_t, labels_t, reduction="none")
    if kind == "focal":
        p_true = torch.exp(-ce)
        ce = (1.0 - p_true) ** focal_gamma * ce
    correct = logits_t.argmax(dim=1) == labels_t
    return ce.numpy().astype(np.float32), correct.numpy()


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(choice)


def _create_model(open_clip, settings: ServerSettings, device: torch.device) -> ClipModel:
    name = settings.model
    quick_gelu = uses_quick_gelu(settings)
    log.info(
        "activations: %s (--quick-gelu %s)",
        "QuickGELU" if quick_gelu else "as configured",
        settings.quick_gelu,
    )
    if settings.checkpoint is not None and settings.quick_gelu == "auto":
        log.warning(
            "--checkpoint with --quick-gelu auto builds %s as configured; if the file holds OpenAI weights, "
            "pass --quick-gelu on (they were trained with QuickGELU)",
            name,
        )
    if settings.random_init:
        log.warning("=" * 72)
        log.warning(
            "--random-init: serving UNTRAINED %s weights (seed %d); outputs are noise", name, settings.seed
        )
        log.warning("=" * 72)
        return open_clip.create_model(name, pretrained=None, device=device, force_quick_gelu=quick_gelu)
    if settings.checkpoint is not None:
        if not settings.checkpoint.is_file():
            raise ModelLoadError(f"checkpoint {settings.checkpoint} does not exist or is not a file")
        try:
            return open_clip.create_model(
                name, pretrained=str(settings.checkpoint), device=device, force_quick_gelu=quick_gelu
            )
        except Exception as exc:
            raise ModelLoadError(
                f"checkpoint {settings.checkpoint} does not load into {name}: {exc}"
            ) from exc
    return _create_pretrained(open_clip, name, str(settings.pretrained), device, quick_gelu)


def _create_pretrained(open_clip, name: str, tag: str, device: torch.device, quick_gelu: bool) -> ClipModel:
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        raise ModelLoadError(f"{name} has no pretrained tag {tag!r}; known tags: {tags or 'none'}")
    try:
        return open_clip.create_model(
            name, pretrained=tag, device=device, require_pretrained=True, force_quick_gelu=quick_gelu
        )
    except Exception as exc:
        raise ModelLoadError(
            f"could not fetch pretrained weights {name}/{tag} ({exc}). Without network access, "
            f"download the open_clip checkpoint on a connected machine and start the server with "
            f"--model {name} --checkpoint PATH{' --quick-gelu on' if quick_gelu else ''}"
        ) from exc
