"""Offline digit data: scikit-learn's bundled handwritten digits split once into a pretraining part
and a held-out part, digits rendered with Pillow's font, and the seed's synthetic tasks built from
the held-out digits (centred, Loc-digits, Biased-digits)."""

__all__ = ["TASK_NAMES"]

# Names only (no imports), so command-line parsers can list them without Pillow or torch.
TASK_NAMES = ("digits", "loc-digits-1x1", "loc-digits-1x4", "biased-digits-08", "biased-digits-09")
