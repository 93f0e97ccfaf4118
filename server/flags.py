"""The server's command line: each setting of :class:`server.settings.ServerSettings` as a flag
``--some-flag`` and an env var ``BLACKVIP_SOME_FLAG`` (the flag wins; an empty variable is unset), read by
``parse_args(argv, env)`` into one settings object."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypedDict, Unpack

from pydantic import ValidationError

from server.access_flags import add_level_price_flag, parse_access_levels
from server.settings import (
    ENV_PREFIX,
    ServerSettings,
    SettingsError,
    hash_api_key,
    ledger_target,
    shipped_weights,
)

__all__ = ["parse_args"]


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ServerSettings:
    """Build settings from ``argv`` (flags) and ``env`` (``BLACKVIP_*`` variables)."""
    env = os.environ if env is None else env
    args = _build_parser(env).parse_args(argv)
    sources = [args.pretrained is not None, args.checkpoint is not None, args.random_init]
    if sum(sources) == 0 and shipped_weights(args.model) is not None:
        args.checkpoint = shipped_weights(args.model)  # models made here need no weights flag
        sources[1] = True
    if sum(sources) != 1:
        raise SettingsError(
            f"choose exactly one weights source for {args.model}: --pretrained TAG (hub download), "
            "--checkpoint PATH (local file) or --random-init (untrained, for tests)"
        )
    keys = _split_keys(args.api_keys) + _read_keys_file(args.keys_file)
    flags_only = {"api_keys", "keys_file", "no_batcher", "no_metrics"}
    values = {k: v for k, v in vars(args).items() if k not in flags_only}
    values["batcher"] = not args.no_batcher
    values["metrics"] = not args.no_metrics
    values["level_prices"] = dict(args.level_prices)  # a later price for one level wins
    try:
        return ServerSettings(**values, api_key_hashes=frozenset(hash_api_key(k) for k in keys))
    except ValidationError as exc:
        raise SettingsError(_first_problem(exc)) from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError):
        return str(cause)
    field = ".".join(str(part) for part in error["loc"]) or "settings"
    return f"--{field.replace('_', '-')}: {error['msg']}"


class _FlagOptions(TypedDict, total=False):
    """The ``add_argument`` options the flags below use, typed so argparse's own signature checks them."""

    type: Callable[[str], object]
    metavar: str
    action: Literal["store_true"]
    choices: Sequence[str]


def _build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    defaults = ServerSettings()
    parser = argparse.ArgumentParser(
        prog="blackvip-server",
        description="Serve a frozen CLIP model as a black box: logits and losses only.",
    )

    def add(
        flag: str, help: str, *aliases: str, default: object = None, **options: Unpack[_FlagOptions]
    ) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        env_name = ENV_PREFIX + dest.upper()
        if default is None:  # the setting's own; a flag that is no setting (--api-keys) passes its own
            default = getattr(defaults, dest, None)
        if env.get(env_name, "") != "":  # empty means unset, as compose files pass them
            default = _from_env(env[env_name], options)
        parser.add_argument(flag, *aliases, default=default, help=f"{help} (env {env_name})", **options)

    add("--host", "interface to bind")
    add("--port", "TCP port; 0 picks a free one", type=int)
    add("--model", "open_clip model name or a config shipped in server/model_configs")
    add("--pretrained", "open_clip pretrained tag, downloaded from the hub", metavar="TAG")
    add("--checkpoint", "local open_clip checkpoint file", type=Path, metavar="PATH")
    add("--random-init", "serve untrained weights (loudly logged)", action="store_true")
    add("--quick-gelu", "QuickGELU (OpenAI weights); auto: on for openai tags", choices=["auto", "on", "off"])
    add("--seed", "torch seed used before building the model", type=int)
    add("--device", "where the model runs", choices=["auto", "cpu", "cuda"])
    add("--ledger", "SQLite file, or postgresql://USER@HOST/DB shared by replicas (password: PGPASSWORD)",
        type=ledger_target)  # fmt: skip
    add("--api-keys", "comma-separated API keys", default="")
    add("--keys-file", "file with one API key per line", type=Path)
    add("--ledger-keys", "require keys even while the ledger holds none ('blackvip-server keys create')",
        action="store_true")  # fmt: skip
    add("--keys-refresh-s", "how often the ledger's keys are re-read (created/revoked keys)", type=float)
    add("--max-batch-images", "most images in one request", type=int)
    add("--max-request-bytes", "largest request body accepted", type=int)
    add("--max-task-bytes", "largest task registration body", type=int)
    add("--max-classes", "most class names in one task", type=int)
    add("--max-templates", "most templates in one task", type=int)
    add("--max-class-name-chars", "longest class name", type=int)
    add("--max-template-chars", "longest template", type=int)
    add("--max-texts", "most class-name x template texts in one task", type=int)
    add("--max-tasks-per-key", "most tasks one key may register", type=int)
    add("--max-task-store-bytes-per-key", "bytes of class names and templates one key's tasks may hold",
        type=int)  # fmt: skip
    add("--text-cache-mb", "memory for cached class embeddings (evicted ones are recomputed)", type=float)
    add("--text-encode-chunk", "texts per text-encoder call (waiting image forwards go first)", type=int)
    add("--max-forward-batch", "most images in one model forward", "--forward-batch", type=int)
    add("--no-batcher", "one forward per request instead of batching queued requests", action="store_true")
    add("--max-queue-delay-ms", "how long the batcher waits to fill a forward", type=float)
    add("--max-queue-images", "images the batcher may queue before answering 503", type=int)
    add("--batch-padding", "fixed: pad forwards to one shape (results independent of batching)",
        choices=["fixed", "none"])  # fmt: skip
    add("--padded-rows", "one size for every forward under --batch-padding fixed (default: 4, 16, 64 "
        "on CPU if they give equal rows, --max-forward-batch on CUDA)", type=int)  # fmt: skip
    add("--precision", "autocast precision on CUDA (a CPU serves fp32)", choices=["fp32", "fp16", "bf16"])
    add("--price-per-1k-images", "cost charged per 1,000 images", type=float)
    add("--price-per-1k-texts", "cost charged per 1,000 texts encoded (registrations, recomputes)",
        type=float)  # fmt: skip
    add("--access-levels", "access levels offered, comma-separated (logits, loss, probabilities, top-k, "
        "label; default: all)", type=parse_access_levels, metavar="L1,L2")  # fmt: skip
    _add_level_prices(parser, env)
    add("--quota-images", "images each key may send in all (default: no limit)", type=int)
    add("--idempotency-window-s", "how long a request id is remembered and never charged twice", type=float)
    add("--replay-ttl-s", "how long an answer is kept for a replay of its request id", type=float)
    add("--replay-store-mb", "most memory the stored answers may take in the ledger", type=float)
    add("--replay-store-key-share", "fraction of the answer store one key's answers may take", type=float)
    add("--ledger-busy-timeout-s", "how long a commit waits for a locked ledger", type=float)
    add("--ledger-pool-size", "PostgreSQL ledger: connections per server process", type=int)
    add("--rejection-flush-s", "how often rejected-request counts are written to the ledger", type=float)
    add("--shutdown-grace-s", "on SIGTERM, how long in-flight requests may finish", type=float)
    add("--max-connections", "open connections at once; beyond it new ones get 503 and are closed", type=int)
    add("--max-uploads-per-key", "request bodies one key may be sending at once (more: 429)", type=int)
    add("--header-timeout-s", "time a request's headers may take to arrive (else 408)", type=float)
    add("--body-timeout-s", "time a request's body may take to arrive (else 408)", type=float)
    add("--memory-budget-mb", "request bytes held in memory at once, server-wide (over it: 503)", type=float)
    add("--allow-open", "serve with no API keys on a non-loopback address", action="store_true")
    add("--published-on", "address the service is published on behind a port mapping (containers)")
    add(
        "--in-container",
        "the server runs in a container: its port mapping decides who reaches it, so "
        "--published-on stands for --host in the open-API check (set by the image)",
        action="store_true",
    )
    add("--log-level", "logging level", choices=["debug", "info", "warning", "error"])
    add("--access-log", "log a line per request (uvicorn's access log, at info)", action="store_true")
    add("--no-metrics", "do not serve Prometheus metrics at /metrics", action="store_true")
    return parser


def _add_level_prices(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    env_name = ENV_PREFIX + "LEVEL_PRICES"
    try:
        add_level_price_flag(parser, env_name, env.get(env_name, ""))
    except argparse.ArgumentTypeError as exc:
        raise SettingsError(f"environment value not valid: {exc}") from exc


def _from_env(raw: str, options: _FlagOptions) -> object:
    if options.get("action") == "store_true":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    convert = options.get("type", str)
    try:
        return convert(raw)
    except ValueError as exc:
        raise SettingsError(f"environment value {raw!r} is not valid: {exc}") from exc
    except argparse.ArgumentTypeError as exc:  # its message names the value (a URL: without its password)
        raise SettingsError(f"environment value not valid: {exc}") from exc


def _split_keys(raw: str) -> list[str]:
    return [key.strip() for key in raw.split(",") if key.strip()]


def _read_keys_file(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SettingsError(f"cannot read keys file {path}: {exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
