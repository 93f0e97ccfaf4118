"""``blackvip``: the client command line.

    blackvip train --data ROOT [--dataset PRESET] [--method blackvip|vp-spsa|bar|zeroshot] [--out DIR] ...
    blackvip eval  --data ROOT [--run DIR] [--eval-splits test]
    blackvip plan  --datasets eurosat dtd [--methods ...] [--seeds ...] [--data ROOT] [--price P]
    blackvip report RUN... [--out DIR]
    blackvip usage [--by hour|day [--since ISO] [--until ISO] [--json]] | info

Training flags mirror :class:`client.training.config.TrainConfig`; a ``--config FILE`` (TOML) sets any
of them, flags win. Server address and key: ``--url``/``--api-key`` or ``BLACKVIP_URL``/``BLACKVIP_API_KEY``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client._exceptions import BlackVIPError, JobInterruptedError
from client._sdk import BlackVIPClient
from client.cli.data import add_data_flags
from client.cli.grid import add_bench_flags, add_plan_flags
from client.cli.report import add_report_flags, run_report
from client.cli.usage import add_usage_flags, show_usage
from client.training.config import METHODS, NO_FLAG, ConfigError, TrainConfig, build_config, dataset_presets
from digits import TASK_NAMES, SourceUnavailableError

__all__ = ["build_parser", "main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    """Every ``blackvip`` command and flag (the docs site renders each command's ``--help`` from it)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("BLACKVIP_URL"), help="server (env BLACKVIP_URL)")
    common.add_argument("--api-key", default=os.environ.get("BLACKVIP_API_KEY"), help="env BLACKVIP_API_KEY")
    parser = argparse.ArgumentParser(prog="blackvip", description="Black-box visual prompting client.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", parents=[common], help="the served model's input contract and limits")
    usage = commands.add_parser("usage", parents=[common], help="this key's usage as counted by the server")
    add_usage_flags(usage)
    train = commands.add_parser("train", parents=[common], help="train a prompt through the API")
    _add_config_flags(train)
    train.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    demo = commands.add_parser("demo", parents=[common], help="zero-shot vs BlackVIP on Loc-MNIST, offline")
    add_demo_flags(demo)
    bench = commands.add_parser("bench", parents=[common], help="a grid of jobs: datasets x methods x seeds")
    add_bench_flags(bench)
    plan = commands.add_parser(
        "plan", parents=[common], help="steps, queries and cost of a grid, run nothing"
    )
    add_plan_flags(plan, data_required=False)
    report = commands.add_parser("report", help="finished runs side by side: a table and accuracy curves")
    add_report_flags(report)
    data = commands.add_parser("data", help="write a synthetic task's image folders (digits, MNIST)")
    add_data_flags(data)
    evaluate = commands.add_parser("eval", parents=[common], help="evaluate zero-shot or a trained run")
    _add_config_flags(evaluate)
    evaluate.add_argument("--run", type=Path, help="a run folder whose checkpoint to evaluate")
    return parser


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with any of the settings below")
    for name, info in TrainConfig.model_fields.items():
        if name in TrainConfig.tagged(NO_FLAG):
            continue
        flag = "--" + name.replace("_", "-")
        annotation = info.annotation
        described = f"{info.description}; " if info.description else ""
        kwargs: dict[str, Any] = {"default": None, "help": f"{described}default: {info.default!r}"}
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        elif bool in (annotation, *args):  # a bare --flag is true; --flag false still reads as false
            kwargs.update(nargs="?", const=True)
        elif typing.get_origin(annotation) is list:
            kwargs["nargs"] = "+"
        elif annotation in (int, float, Path):
            kwargs["type"] = annotation
        elif args and args[0] in (int, float, Path):
            kwargs["type"] = args[0]
        parser.add_argument(flag, **kwargs)
    parser.epilog = f"methods: {', '.join(METHODS)}; dataset presets: {', '.join(dataset_presets())}"


def add_demo_flags(parser: argparse.ArgumentParser) -> None:
    # Real handwriting: at 500 steps BlackVIP beats zero-shot here by more than the 10 points (mean of 3
    # seeds, bench/results/synthetic.md) that issue 16 set for making it the default.
    parser.add_argument("--task", default="loc-mnist-digits-1x1", choices=TASK_NAMES)
    parser.add_argument("--steps", type=int, default=500, help="BlackVIP steps (default 500)")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between test evaluations")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="data, ledger and runs")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also BlackVIP with each named optimiser (spsa-gc-q1, cma-es-d500), on as many training images "
        "as the seed's SPSA-GC",
    )


def config_from(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    cli = {name: getattr(args, name, None) for name in TrainConfig.model_fields}
    cli.update(overrides)
    return build_config(cli, args.config)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    try:
        if args.command in ("info", "usage"):
            with BlackVIPClient(args.url or "http://127.0.0.1:8000", args.api_key) as client:
                if args.command == "info":
                    print(json.dumps(client.info().model_dump(mode="json"), indent=2))
                else:
                    print(show_usage(client, args))
            return 0
        if args.command == "plan" or (args.command == "bench" and args.dry_run):
            from client.cli.plan import print_plan

            print_plan(args)
            return 0
        if args.command == "bench":
            from client.cli.grid import run_bench

            logging.getLogger().setLevel(logging.INFO)
            print(f"table: {run_bench(args)}")
            return 0
        if args.command == "report":
            run_report(args)
            return 0
        if args.command == "data":
            from client.cli.data import make_dataset

            print(make_dataset(args))
            return 0
        from client.training.loop import run_evaluation, run_job  # torch is imported only for jobs

        if args.command == "demo":
            from client.cli.demo import run_demo

            run_demo(args)
            return 0
        if args.command == "train":
            outcome = run_job(config_from(args), resume=args.resume)
        else:
            outcome = run_evaluation(config_from(args), args.run)
    except JobInterruptedError as exc:
        print(f"blackvip: stopped: {exc}", file=sys.stderr)
        return 3
    except (BlackVIPError, ConfigError, FileNotFoundError, SourceUnavailableError) as exc:
        print(f"blackvip: error: {exc}", file=sys.stderr)
        return 1
    print(outcome.summary_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
