"""The ``plan`` command's I/O: the server's limits and price (``/v1/info``, if a server is named),
then the table of :mod:`client.training.plan`."""

from __future__ import annotations

import argparse
import dataclasses

from client._sdk import BlackVIPClient
from client.training.plan import Limits, plan_rows, render_plan

__all__ = ["limits_for", "print_plan"]


def limits_for(args: argparse.Namespace) -> Limits:
    """Ask the named server; without one, its default limits. ``--price`` overrides the price."""
    limits = Limits()
    if args.url:
        with BlackVIPClient(args.url, args.api_key) as api:
            info = api.info()  # a server that was named but cannot answer is an error, not a guess
        limits = Limits(
            info.image_size,
            info.max_batch_images,
            info.max_request_bytes,
            info.price_per_1k_images,
            f"/v1/info of {args.url}",
            info.price_per_1k_texts,
        )
    if args.price is not None:
        if args.price < 0:
            raise ValueError(f"--price must not be negative, got {args.price}")
        limits = dataclasses.replace(
            limits, price_per_1k_images=args.price, source=limits.source + "; --price"
        )
    return limits


def print_plan(args: argparse.Namespace) -> str:
    limits = limits_for(args)
    table = render_plan(plan_rows(args, limits), limits)
    print(table)
    return table
