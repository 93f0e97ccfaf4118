"""BlackVIP's Coordinator: a frozen image encoder and a small trainable decoder that turns the
encoding (plus a learnable "prompt trigger") into an image-shaped, input-dependent prompt.

The decoder follows the seed: the feature vector and the trigger are reshaped to a (C, b, b) cube;
four blocks [grouped ConvTranspose k2 s2 -> 1x1 ConvTranspose (no bias) -> BatchNorm -> GELU] with
64, 32, 32, 16 channels and a final ConvTranspose(16 -> 3, k2, s2, no bias) upsample it 32-fold.
At 224 px, b = 7, a 768-d encoder and an 800-value trigger give the seed's 9,920 parameters.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from client._exceptions import EncoderLoadError

__all__ = ["Coordinator", "Decoder", "EncoderLoadError", "build_encoder", "ScratchEncoder"]

TRIGGER_VALUES = 800  # the seed's trigger length with a 768-d encoder at 224 px


class Decoder(nn.Module):
    def __init__(self, z_dim: int, image_size: int, trigger_values: int = TRIGGER_VALUES) -> None:
        super().__init__()
        if image_size % 32:
            raise ValueError(
                f"the decoder upsamples 32-fold: image size {image_size} must be a multiple of 32"
            )
        self.base = image_size // 32  # 7 at 224 px
        cells = self.base * self.base
        self.channels = math.ceil((z_dim + trigger_values) / cells)  # 32 at 224 px with 768 + 800
        self.trigger = nn.Parameter(torch.empty(1, self.channels * cells - z_dim).uniform_(0.0, 0.1))
        # (in, after the grouped upsampling, after the 1x1): the seed's 64, 32, 32, 16 outputs
        stages = [(self.channels, 64, 64), (64, 64, 32), (32, 32, 32), (32, 32, 16)]
        blocks: list[nn.Module] = []
        for c_in, c_mid, c_out in stages:
            blocks += [
                nn.ConvTranspose2d(c_in, c_mid, 2, 2, groups=math.gcd(c_in, c_mid)),
                nn.ConvTranspose2d(c_mid, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.GELU(),
            ]
        blocks.append(nn.ConvTranspose2d(16, 3, 2, 2, bias=False))
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]  # z: (N, z_dim)
        cube = torch.cat([z, self.trigger.expand(n, -1)], dim=1).view(n, self.channels, self.base, self.base)
        return self.body(cube)  # (N, 3, 32 b, 32 b)


class ScratchEncoder(nn.Module):
    """The seed's random conv encoder: five [conv3x3 -> conv2x2 s2 -> BN -> GELU] stages, pooled."""

    def __init__(self, z_dim: int = 768, seed: int = 0) -> None:
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # the frozen random encoder is the same in every run and resume
        widths = [3, 32, 64, 64, 128, z_dim]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_in if c_in > 3 else 32, 3, 1, 1),
                nn.Conv2d(c_in if c_in > 3 else 32, c_out, 2, 2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.GELU(),
            ]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        torch.random.set_rng_state(generator_state)
        self.z_dim = z_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, 3, S, S) -> (N, z_dim)


class HFViTEncoder(nn.Module):
    """A transformers ViT (the seed's MAE ViT-B/16): the [CLS] token of the last hidden state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.input_size = int(model.config.image_size)
        self.z_dim = int(model.config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size:  # the encoder sees the image at its own resolution
            x = nn.functional.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        out = self.model(pixel_values=x, output_hidden_states=True)
        return out.hidden_states[-1][:, 0, :]  # (N, hidden)


MAE_HUB_NAME = "facebook/vit-mae-base"


def build_encoder(kind: str, path: Path | None = None, seed: int = 0) -> nn.Module:
    """``scratch`` (offline, random, frozen) or ``mae`` (hub name or a local save_pretrained folder)."""
    if kind == "scratch":
        return ScratchEncoder(seed=seed)
    if kind != "mae":
        raise ValueError(f"unknown encoder {kind!r}: use 'mae' or 'scratch'")
    try:
        from transformers import ViTModel
    except ImportError as exc:
        raise EncoderLoadError("the mae encoder needs transformers: pip install 'blackvip-sim[mae]'") from exc
    source = str(path) if path is not None else MAE_HUB_NAME
    try:
        model = ViTModel.from_pretrained(source, add_pooling_layer=False)
    except Exception as exc:
        raise EncoderLoadError(
            f"cannot load the MAE encoder from {source!r} ({type(exc).__name__}: {exc}). Offline, download "
            f"{MAE_HUB_NAME} on a connected machine (save_pretrained) and pass --encoder-path DIR, "
            f"or use --encoder scratch"
        ) from exc
    return HFViTEncoder(model)


class Coordinator(nn.Module):
    """prompt = decoder(encoder(x)); only the decoder (and its trigger) is trained."""

    def __init__(self, encoder: nn.Module, image_size: int) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.decoder = Decoder(int(encoder.z_dim), image_size)

    def train(self, mode: bool = True) -> Coordinator:
        super().train(mode)
        self.encoder.eval()  # frozen: its BatchNorm statistics never move
        return self

    @torch.no_grad()
    def features(self, x_normalised: torch.Tensor) -> torch.Tensor:
        return self.encoder(x_normalised)  # (N, z_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)  # (N, 3, S, S)
