"""``blackvip``, the command line: train, eval, demo, bench (a grid of jobs), plan, data, info, usage."""

from client.cli.commands import main, parse_args

__all__ = ["main", "parse_args"]
