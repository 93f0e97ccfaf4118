"""Offline digit data: scikit-learn's bundled handwritten digits split once into a pretraining part
and a held-out part, digits rendered with Pillow's font, and the seed's synthetic tasks built from
the held-out digits (centred, Loc-digits, Biased-digits)."""
