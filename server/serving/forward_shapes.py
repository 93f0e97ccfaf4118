"""Which sizes the batcher pads forwards to (``--batch-padding fixed``): chosen from the settings and
checked on the loaded model, so that a row's bits never depend on what it was batched with."""

from __future__ import annotations

import logging

from server.serving.clip_model import ClipBackend
from server.serving.plans import same_rows_at
from server.settings import ServerSettings

__all__ = ["CPU_SHAPES", "forward_shapes"]

log = logging.getLogger(__name__)

CPU_SHAPES = (4, 16, 64)  # padding a lone 4-image request to 64 rows would cost it ~10x


def forward_shapes(
    settings: ServerSettings, backend: ClipBackend, seconds: dict[int, float] | None = None
) -> tuple[int, ...] | None:
    """The forward sizes of ``--batch-padding fixed`` (None: forwards as big as their batch). On CPU
    a few sizes, if they give every row the same bits (checked here, on the model), else one.
    ``seconds`` receives the checked sizes' forward times, for the batcher's cheapest plans."""
    largest = settings.max_forward_batch
    if settings.batch_padding == "none":
        return None
    if settings.padded_rows is not None:
        return (min(settings.padded_rows, largest),)
    if backend.device.type == "cuda":
        return (largest,)  # a GPU forward costs about the same for 4 or 64 rows
    shapes = tuple(sorted({min(size, largest) for size in CPU_SHAPES} | {largest}))
    image = (3, backend.image_size, backend.image_size)
    if len(shapes) > 1 and not same_rows_at(backend.image_features, image, shapes, seconds):
        log.info("forward sizes %s give rows different bits: every forward pads to %d", shapes, largest)
        return (largest,)
    return shapes
