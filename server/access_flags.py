"""The command-line forms of access levels (``shared.access``): ``--access-levels logits,top-k`` (the
server's, and ``blackvip-server keys ... --levels``) and ``--level-price LEVEL=PRICE``, repeatable."""

from __future__ import annotations

import argparse
import math

from shared.access import AccessLevel

__all__ = ["add_level_price_flag", "parse_access_levels", "parse_level_price"]


def _level(text: str) -> AccessLevel:
    try:
        return AccessLevel(text.strip())
    except ValueError:
        known = ", ".join(level.value for level in AccessLevel)
        raise argparse.ArgumentTypeError(f"no access level {text.strip()!r} (levels: {known})") from None


def parse_access_levels(text: str) -> tuple[AccessLevel, ...]:
    """``logits,top-k``: access levels, comma-separated."""
    return tuple(_level(part) for part in text.split(",") if part.strip())


def parse_level_price(text: str) -> tuple[AccessLevel, float]:
    """``LEVEL=PRICE``: a level's price per 1,000 images."""
    name, sep, price = text.partition("=")
    try:
        value = float(price)
    except ValueError:
        value = math.nan
    if not sep or not (math.isfinite(value) and value >= 0.0):
        raise argparse.ArgumentTypeError(f"not LEVEL=PRICE with a price >= 0: {text!r} (e.g. label=0.2)")
    return _level(name), value


def add_level_price_flag(parser: argparse.ArgumentParser, env_name: str, env_value: str) -> None:
    """``--level-price LEVEL=PRICE`` into ``level_prices``, a list of pairs: those of the env var
    (comma-separated) first, so a flag for the same level, later, wins."""
    default = [parse_level_price(part) for part in env_value.split(",") if part.strip()]
    parser.add_argument(
        "--level-price",
        dest="level_prices",
        action="append",
        type=parse_level_price,
        default=default,
        metavar="LEVEL=PRICE",
        help=f"price per 1,000 images at an access level, repeatable (env {env_name}: comma-separated)",
    )
