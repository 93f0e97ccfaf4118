"""The Coordinator's frozen encoders, as the seed offers them (trainers/visual_prompters.py):

- ``mae``: MAE-pretrained ViT-B/16 (``facebook/vit-mae-base``), the [CLS] token of the last hidden
  state before the final LayerNorm (``hidden_states[-1][:, 0]``), 768-d. The seed's default.
- ``vit-sup``: supervised ViT-B/16 (``google/vit-base-patch16-224-in21k``), ``last_hidden_state[:, 0]``.
- ``dino-rn50``: DINO ResNet-50 (``Ramos-Ramos/dino-resnet-50``), the pooled 2048-d feature; the cube is
  64 x 7 x 7 (2048 + a 1088-value trigger) and the first upsampling uses 32 groups, as the seed's.
- ``scratch``: the seed's ``coordinator_init``: a random, frozen conv encoder, five [conv3x3 -> conv2x2
  s2 -> BN -> GELU] stages to a 32 x 7 x 7 map fed to the decoder as it is (no trigger). The seed never
  switches it out of train mode, so its BatchNorm uses batch statistics, in training and at test.
- ``random-pooled``: this project's offline toy encoder (not the seed's): the same stages to 768
  channels, average-pooled to a vector, with the trigger; BN in eval mode.

Pretrained encoders load from a hub name or a local ``save_pretrained`` folder (``--encoder-path``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from client._exceptions import EncoderLoadError

__all__ = [
    "ENCODER_KINDS",
    "HUB_NAMES",
    "DecoderSpec",
    "HFResNetEncoder",
    "HFViTEncoder",
    "RandomPooledEncoder",
    "SeedScratchEncoder",
    "build_encoder",
]

HUB_NAMES = {
    "mae": "facebook/vit-mae-base",
    "vit-sup": "google/vit-base-patch16-224-in21k",
    "dino-rn50": "Ramos-Ramos/dino-resnet-50",
}
ENCODER_KINDS = ("random-pooled", "scratch", *HUB_NAMES)
OFFLINE_CHOICES = "--encoder scratch (the seed's random encoder) or --encoder random-pooled"


@dataclass(frozen=True)
class DecoderSpec:
    channels: int  # of the cube the decoder starts from
    first_groups: int  # groups of the first upsampling ConvTranspose
    z_dim: int | None  # a vector encoder's width (a trigger fills the cube); None: the encoder gives a map


def _seed_spec(z_dim: int, src_dim: int, first_groups: int | None = None) -> DecoderSpec:
    """The seed's DecoderManual for a pretrained encoder: SRC_DIM = channels x 7 x 7."""
    channels = src_dim // 49
    return DecoderSpec(channels, first_groups or min(channels, 64), z_dim)


def _conv_stages(widths: list[int]) -> list[nn.Module]:
    """[conv3x3 -> conv2x2 s2 (no bias) -> BN -> GELU] per stage, as the seed's EncoderManual."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
        c_mid = c_in if c_in > 3 else 32
        layers += [nn.Conv2d(c_in, c_mid, 3, 1, 1), nn.Conv2d(c_mid, c_out, 2, 2, bias=False)]
        layers += [nn.BatchNorm2d(c_out), nn.GELU()]
    return layers


def _seeded(build, seed: int) -> nn.Module:
    """Build with torch seeded by ``seed`` and the global RNG left as it was (same encoder on resume)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)


class RandomPooledEncoder(nn.Module):
    """This project's toy encoder: random frozen conv stages to ``z_dim`` channels, average-pooled."""

    def __init__(self, z_dim: int = 768, seed: int = 0) -> None:
        super().__init__()
        self.body = _seeded(
            lambda: nn.Sequential(
                *_conv_stages([3, 32, 64, 64, 128, z_dim]), nn.AdaptiveAvgPool2d(1), nn.Flatten()
            ),
            seed,
        )
        self.z_dim = z_dim

    def decoder_spec(self, image_size: int) -> DecoderSpec:
        cells = (image_size // 32) ** 2
        channels = math.ceil((self.z_dim + 800) / cells)  # an 800-value trigger at 224 px, as the seed's
        return DecoderSpec(channels, math.gcd(channels, 64), self.z_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, 3, S, S) -> (N, z_dim)


class SeedScratchEncoder(nn.Module):
    """The seed's EncoderManual(E_OUT_DIM=32, gap=False): (N, 3, S, S) -> (N, 32, S/32, S/32)."""

    def __init__(self, out_channels: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.body = _seeded(lambda: nn.Sequential(*_conv_stages([3, 32, 64, 64, 128, out_channels])), seed)
        self.out_channels = out_channels
        self.train(True)

    def train(self, mode: bool = True) -> SeedScratchEncoder:
        # The seed registers only the decoder with the trainer, so this module keeps nn.Module's
        # default train mode for the whole run: BatchNorm normalises with each batch's statistics.
        return super().train(True)

    def decoder_spec(self, image_size: int) -> DecoderSpec:
        return DecoderSpec(self.out_channels, self.out_channels, None)  # g_c = src_c (< 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class HFViTEncoder(nn.Module):
    """A transformers ViT: the [CLS] token, before (``mae``) or after (``vit-sup``) the final LayerNorm."""

    def __init__(self, model: nn.Module, after_layernorm: bool) -> None:
        super().__init__()
        self.model = model
        self.after_layernorm = after_layernorm
        self.input_size = int(model.config.image_size)
        self.z_dim = int(model.config.hidden_size)

    def decoder_spec(self, image_size: int) -> DecoderSpec:
        return _seed_spec(self.z_dim, 1568)  # the seed's SRC_DIM: 32 x 7 x 7, an 800-value trigger

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size:  # the encoder sees the image at its own resolution
            x = nn.functional.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        out = self.model(pixel_values=x, output_hidden_states=not self.after_layernorm)
        hidden = out.last_hidden_state if self.after_layernorm else out.hidden_states[-1]
        return hidden[:, 0, :]  # (N, hidden)


class HFResNetEncoder(nn.Module):
    """A transformers ResNet (DINO ResNet-50): the pooled feature, 2048-d."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.z_dim = int(model.config.hidden_sizes[-1])

    def decoder_spec(self, image_size: int) -> DecoderSpec:
        return _seed_spec(self.z_dim, 3136, first_groups=32)  # 64 x 7 x 7; the seed's groups=32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).pooler_output.reshape(x.shape[0], -1)


def build_encoder(kind: str, path: Path | None = None, seed: int = 0) -> nn.Module:
    """An encoder by name; pretrained ones from ``path`` (a save_pretrained folder) or the hub."""
    if kind == "random-pooled":
        return RandomPooledEncoder(seed=seed)
    if kind == "scratch":
        return SeedScratchEncoder(seed=seed)
    if kind not in HUB_NAMES:
        raise ValueError(f"unknown encoder {kind!r}: use one of {', '.join(ENCODER_KINDS)}")
    try:
        import transformers
    except ImportError as exc:
        needs = f"the {kind} encoder needs transformers: pip install 'blackvip-sim[mae]'"
        raise EncoderLoadError(f"{needs}, or use {OFFLINE_CHOICES}") from exc
    source = str(path) if path is not None else HUB_NAMES[kind]
    if path is not None and not Path(path).is_dir():
        raise EncoderLoadError(_missing(kind, source, "no such folder"))
    try:
        if kind == "dino-rn50":
            return HFResNetEncoder(transformers.ResNetModel.from_pretrained(source))
        if kind == "mae":
            return HFViTEncoder(transformers.ViTModel.from_pretrained(source, add_pooling_layer=False), False)
        return HFViTEncoder(transformers.ViTModel.from_pretrained(source), True)
    except Exception as exc:
        raise EncoderLoadError(_missing(kind, source, f"{type(exc).__name__}: {exc}")) from exc


def _missing(kind: str, source: str, why: str) -> str:
    return (
        f"cannot load the {kind} encoder from {source!r} ({why}). Offline, download {HUB_NAMES[kind]} on a "
        f"connected machine (save_pretrained) and pass --encoder-path DIR, or use {OFFLINE_CHOICES}"
    )
