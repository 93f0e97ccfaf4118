"""BlackVIP's Coordinator: a frozen image encoder and a small trainable decoder that turns the
encoding (plus, for vector encoders, a learnable "prompt trigger") into an image-shaped,
input-dependent prompt.

The decoder is the seed's ``DecoderManual``: a (C, b, b) cube (b = size / 32, 7 at 224 px) goes
through four blocks [grouped ConvTranspose k2 s2 -> 1x1 ConvTranspose (no bias) -> BatchNorm -> GELU]
with 64, 32, 32, 16 channels and a final ConvTranspose(16 -> 3, k2, s2, no bias). A vector encoder's
z is concatenated with the trigger to fill the cube (768 + 800 = 32 x 7 x 7 for MAE, the seed's
SRC_DIM 1568: 9,920 parameters); the seed's scratch encoder hands over a 32 x 7 x 7 map, no trigger.
The encoders themselves are in :mod:`client.training.encoders`.
"""

from __future__ import annotations

import torch
from torch import nn

from client._exceptions import EncoderLoadError
from client.training.encoders import (
    ENCODER_KINDS,
    DecoderSpec,
    HFViTEncoder,
    RandomPooledEncoder,
    SeedScratchEncoder,
    build_encoder,
)

__all__ = [
    "ENCODER_KINDS",
    "Coordinator",
    "Decoder",
    "DecoderSpec",
    "EncoderLoadError",
    "HFViTEncoder",
    "RandomPooledEncoder",
    "SeedScratchEncoder",
    "build_encoder",
]


class Decoder(nn.Module):
    def __init__(self, spec: DecoderSpec, image_size: int) -> None:
        super().__init__()
        if image_size % 32:
            raise ValueError(
                f"the decoder upsamples 32-fold: image size {image_size} must be a multiple of 32"
            )
        self.base = image_size // 32  # 7 at 224 px
        self.channels = spec.channels
        self.uses_trigger = spec.z_dim is not None
        if self.uses_trigger:
            trigger = self.channels * self.base**2 - int(spec.z_dim)
            if trigger < 0:
                raise ValueError(
                    f"a {spec.z_dim}-d encoding does not fit the decoder's {self.channels} x {self.base} x "
                    f"{self.base} cube at {image_size} px (the seed's decoder starts at 7 x 7, 224 px)"
                )
            self.trigger = nn.Parameter(torch.empty(1, trigger).uniform_(0.0, 0.1))  # the seed's init
        # (in, after the grouped upsampling, after the 1x1): the seed's 64, 32, 32, 16 outputs
        stages = [(self.channels, 64, 64), (64, 64, 32), (32, 32, 32), (32, 32, 16)]
        blocks: list[nn.Module] = []
        for index, (c_in, c_mid, c_out) in enumerate(stages):
            groups = spec.first_groups if index == 0 else c_in
            blocks += [
                nn.ConvTranspose2d(c_in, c_mid, 2, 2, groups=groups),
                nn.ConvTranspose2d(c_mid, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.GELU(),
            ]
        blocks.append(nn.ConvTranspose2d(16, 3, 2, 2, bias=False))
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]
        if not self.uses_trigger:  # a (N, C, b, b) map from the seed's scratch encoder
            return self.body(z)
        cube = torch.cat([z, self.trigger.expand(n, -1)], dim=1).view(n, self.channels, self.base, self.base)
        return self.body(cube)  # (N, 3, 32 b, 32 b)


class Coordinator(nn.Module):
    """prompt = decoder(encoder(x)); only the decoder (and its trigger) is trained."""

    def __init__(self, encoder: nn.Module, image_size: int) -> None:
        super().__init__()
        self.encoder = encoder.requires_grad_(False)
        self.encoder.train(False)
        self.decoder = Decoder(encoder.decoder_spec(image_size), image_size)

    def train(self, mode: bool = True) -> Coordinator:
        super().train(mode)
        # Frozen: a pretrained encoder stays in eval mode (the seed's HF models are never switched);
        # the seed's scratch encoder keeps its own rule (see SeedScratchEncoder.train).
        self.encoder.train(False)
        return self

    @torch.no_grad()
    def features(self, x_normalised: torch.Tensor) -> torch.Tensor:
        return self.encoder(x_normalised)  # (N, z_dim) or (N, C, b, b)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)  # (N, 3, S, S)
