"""Visual prompts for each method, all mapping a batch in [0, 1] pixel space to a prompted batch
in [0, 1] pixel space (what the server accepts).

- :class:`CoordinatorPrompt` (BlackVIP): add ``p_eps * prompt`` in the server's normalised space, clamp
  to the normalised image of [0, 1], map back to pixels.
- :class:`PaddingPrompt` (VP): a learnable frame of width 30 at 224 px (scaled to the input size),
  added in normalised space. The seed does not clip it; a black-box server only takes valid images,
  so the result is clamped to [0, 1] here (docs/reproducing.md, "Known deviations", measures it).
- :class:`BarProgram` (BAR): the image, read at 194/224 of the frame (as the seed's INPUT.SIZE 194),
  centred in the frame, the frame outside it filled with sigmoid(W).
- :class:`NoPrompt`: zero-shot.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from client.training.coordinator import Coordinator

__all__ = ["BarProgram", "CoordinatorPrompt", "NoPrompt", "PaddingPrompt", "PixelSpace", "Prompter"]


class PixelSpace:
    """The server's normalisation: x_norm = (x - mean) / std, channel-wise."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.low, self.high = -self.mean / self.std, (1.0 - self.mean) / self.std

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def to_pixels(self, normalised: torch.Tensor) -> torch.Tensor:
        # The final clamp only absorbs float rounding: the server rejects 1.0000001.
        return (normalised * self.std + self.mean).clamp(0.0, 1.0)

    def clip(self, normalised: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(normalised, self.high), self.low)


class Prompter(nn.Module):
    """Trainable parameters as one flat vector; ``prepare`` caches per-batch work (encoder)."""

    def prepare(self, pixels: torch.Tensor) -> object:
        return None

    def apply(self, pixels: torch.Tensor, prepared: object) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor, prepared: object) -> torch.Tensor:
        return self.apply(pixels, prepared)

    def apply_vector(self, vector: torch.Tensor, pixels: torch.Tensor, prepared: object) -> torch.Tensor:
        """``apply`` with the trainable parameters read from ``vector`` (the layout of ``get_vector``),
        leaving the module's own parameters untouched: an optimiser's candidates never leak into it."""
        named = [(name, param) for name, param in self.named_parameters() if param.requires_grad]
        expected = sum(param.numel() for _, param in named)
        if vector.numel() != expected:
            raise ValueError(f"a vector of {vector.numel()} values for {expected} trainable parameters")
        tensors, offset = {}, 0
        for name, param in named:
            tensors[name] = vector[offset : offset + param.numel()].view_as(param)
            offset += param.numel()
        return torch.func.functional_call(self, tensors, (pixels, prepared))

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def get_vector(self) -> torch.Tensor:
        params = self.trainable()
        return parameters_to_vector(params).detach().clone() if params else torch.zeros(0)

    def set_vector(self, vector: torch.Tensor) -> None:
        if vector.numel():
            vector_to_parameters(vector.clone(), self.trainable())  # no aliasing with the caller


class NoPrompt(Prompter):
    def apply(self, pixels: torch.Tensor, prepared: object) -> torch.Tensor:
        return pixels


class CoordinatorPrompt(Prompter):
    def __init__(self, coordinator: Coordinator, space: PixelSpace, p_eps: float) -> None:
        super().__init__()
        self.coordinator = coordinator
        self.space = space
        self.p_eps = p_eps

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.coordinator.features(self.space.normalise(pixels))  # (N, z_dim), once per batch

    def apply(self, pixels: torch.Tensor, prepared: object) -> torch.Tensor:
        prompt = self.coordinator(prepared)  # (N, 3, S, S)
        normalised = self.space.clip(self.space.normalise(pixels) + self.p_eps * prompt)
        return self.space.to_pixels(normalised)


class PaddingPrompt(Prompter):
    def __init__(self, image_size: int, space: PixelSpace, pad: int | None = None, seed: int = 0) -> None:
        super().__init__()
        pad = pad if pad is not None else max(1, round(30 * image_size / 224))
        inner = image_size - 2 * pad
        generator = torch.Generator().manual_seed(seed)
        self.pad_up = nn.Parameter(torch.randn(1, 3, pad, image_size, generator=generator))
        self.pad_down = nn.Parameter(torch.randn(1, 3, pad, image_size, generator=generator))
        self.pad_left = nn.Parameter(torch.randn(1, 3, inner, pad, generator=generator))
        self.pad_right = nn.Parameter(torch.randn(1, 3, inner, pad, generator=generator))
        self.register_buffer("centre", torch.zeros(1, 3, inner, inner))
        self.space = space

    def frame(self) -> torch.Tensor:
        """The prompt (1, 3, S, S) in normalised space: the pads around a zero centre."""
        middle = torch.cat([self.pad_left, self.centre, self.pad_right], dim=3)
        return torch.cat([self.pad_up, middle, self.pad_down], dim=2)

    def apply(self, pixels: torch.Tensor, prepared: object) -> torch.Tensor:
        # to_pixels clamps to [0, 1]: the one deviation from the seed (docs/reproducing.md, "Known
        # deviations"); bench/vp_inprocess.py measures it against the seed's unclamped pads.
        return self.space.to_pixels(self.space.normalise(pixels) + self.frame())


class BarProgram(Prompter):
    def __init__(self, image_size: int, inner: int | None = None, seed: int = 0) -> None:
        super().__init__()
        inner = inner if inner is not None else 2 * round(194 * image_size / 224 / 2)
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(3, image_size, image_size, generator=generator))
        self.lo = (image_size - inner) // 2
        self.inner = inner
        mask = torch.ones(1, 3, image_size, image_size)
        mask[:, :, self.lo : self.lo + inner, self.lo : self.lo + inner] = 0.0
        self.register_buffer("mask", mask)

    def apply(self, pixels: torch.Tensor, prepared: object) -> torch.Tensor:
        # As the seed's PROGRAM: the image arrives at the inner size (read there, bicubic) and is placed
        # as it is; no resampling here.
        if tuple(pixels.shape[-2:]) != (self.inner, self.inner):
            raise ValueError(
                f"BAR takes images read at its inner size {self.inner} px, got {tuple(pixels.shape[-2:])}"
            )
        framed = torch.zeros(pixels.shape[0], 3, self.mask.shape[-1], self.mask.shape[-1])
        framed[:, :, self.lo : self.lo + self.inner, self.lo : self.lo + self.inner] = pixels
        return framed + torch.sigmoid(self.weight) * self.mask
