"""The frozen CLIP model: loading, text features, logits and per-image losses.

Knows nothing of HTTP. Every forward pass runs under ``torch.inference_mode()`` and under one lock,
so a device serves one model call at a time whatever the number of request threads.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from server.settings import ServerSettings

__all__ = [
    "MODEL_CONFIG_DIR",
    "OPENAI_TAGS",
    "ClipBackend",
    "ForwardResult",
    "ModelLoadError",
    "per_image_loss",
    "uses_quick_gelu",
]

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
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


@dataclass(frozen=True)
class ForwardResult:
    logits: np.ndarray  # (N, C) float32
    batch_passes: int


class ClipBackend:
    """A loaded open_clip model plus what clients may know about its input."""

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device, settings: ServerSettings):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.forward_batch = settings.forward_batch
        cfg = model.visual.preprocess_cfg
        self.image_size = int(cfg["size"][0]) if isinstance(cfg["size"], (tuple, list)) else int(cfg["size"])
        self.mean = tuple(float(v) for v in cfg["mean"])
        self.std = tuple(float(v) for v in cfg["std"])
        self._mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        self.lock = threading.RLock()  # one model call at a time on this device

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
        log.info(
            "loaded %s (%s) on %s: %d px input",
            settings.model,
            settings.weights_label,
            device,
            backend.image_size,
        )
        return backend

    def encode_texts(self, class_names: list[str], templates: list[str]) -> torch.Tensor:
        """Class embeddings (C, D): the normalised mean over templates, as CLIP's zero-shot recipe."""
        texts = [template.format(name) for name in class_names for template in templates]
        with self.lock, torch.inference_mode():
            chunks = [
                self.model.encode_text(self.tokenizer(texts[i : i + 256]).to(self.device))
                for i in range(0, len(texts), 256)
            ]
        features = F.normalize(torch.cat(chunks).float(), dim=-1)
        features = features.view(len(class_names), len(templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1)

    def logits(self, images: np.ndarray, text_features: torch.Tensor) -> ForwardResult:
        """Logits (N, C) = exp(logit_scale) * cosine(image, class) for images (N, 3, H, W) in [0, 1]."""
        passes = math.ceil(len(images) / self.forward_batch)
        outputs = []
        with self.lock, torch.inference_mode():
            scale = self.model.logit_scale.exp().float()
            for start in range(0, len(images), self.forward_batch):
                # np.array copies: wire buffers are read-only and torch wants writable memory
                pixels = torch.from_numpy(np.array(images[start : start + self.forward_batch]))
                chunk = _to_unit_float(pixels).to(self.device)
                features = self.model.encode_image((chunk - self._mean) / self._std).float()
                outputs.append(scale * F.normalize(features, dim=-1) @ text_features.T)
        logits = torch.cat(outputs).cpu().numpy().astype(np.float32, copy=False)
        return ForwardResult(logits=logits, batch_passes=passes)


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


def _to_unit_float(pixels: torch.Tensor) -> torch.Tensor:
    if pixels.dtype == torch.uint8:
        return pixels.float() / 255.0
    return pixels.float()


def _create_model(open_clip, settings: ServerSettings, device: torch.device) -> torch.nn.Module:
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


def _create_pretrained(
    open_clip, name: str, tag: str, device: torch.device, quick_gelu: bool
) -> torch.nn.Module:
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
