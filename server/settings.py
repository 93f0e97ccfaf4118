"""Server settings: one object built from CLI flags over env vars over defaults.

Each flag ``--some-flag`` has an env var ``BLACKVIP_SOME_FLAG``; the flag wins. API keys are hashed
as soon as they are read and only the hashes are kept.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ServerSettings", "SettingsError", "hash_api_key", "parse_args", "shipped_weights"]

ENV_PREFIX = "BLACKVIP_"


class SettingsError(ValueError):
    """Settings that cannot describe a runnable server."""


class ServerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model: str = "toy-digits"
    pretrained: str | None = None
    checkpoint: Path | None = None
    random_init: bool = False
    quick_gelu: Literal["auto", "on", "off"] = "auto"  # auto: on for OpenAI-pretrained tags (clip_model.py)
    seed: int = 0  # makes --random-init weights identical across restarts
    device: Literal["auto", "cpu", "cuda"] = "auto"
    ledger: Path = Path("blackvip-ledger.sqlite3")
    api_key_hashes: frozenset[str] = frozenset()
    max_batch_images: int = Field(2048, ge=1)  # the byte limit binds first for large images
    max_request_bytes: int = Field(64 * 2**20, ge=1024)
    max_texts: int = Field(100_000, ge=1)
    forward_batch: int = Field(64, ge=1)
    price_per_1k_images: float = Field(1.0, ge=0.0)
    quota_images: int | None = Field(None, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def weights_label(self) -> str:
        """What the info endpoint says about the weights (never the weights themselves)."""
        if self.random_init:
            return "random-init"
        if self.checkpoint is not None:
            return f"checkpoint:{self.checkpoint.name}"
        return str(self.pretrained)

    def public_dict(self) -> dict[str, object]:
        """The settings as saved with a run: everything but the key hashes."""
        data = self.model_dump(mode="json", exclude={"api_key_hashes"})
        data["api_keys"] = len(self.api_key_hashes)
        return data


SHIPPED_WEIGHTS_DIR = Path(__file__).parent / "weights"


def shipped_weights(model: str) -> Path | None:
    """The checkpoint made in this repository for ``model`` (e.g. toy-digits), if there is one."""
    path = SHIPPED_WEIGHTS_DIR / f"{model}.pt"
    return path if path.is_file() else None


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


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
    values = {k: v for k, v in vars(args).items() if k not in {"api_keys", "keys_file"}}
    return ServerSettings(**values, api_key_hashes=frozenset(hash_api_key(k) for k in keys))


def _build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    defaults = ServerSettings()
    parser = argparse.ArgumentParser(
        prog="blackvip-server",
        description="Serve a frozen CLIP model as a black box: logits and losses only.",
    )

    def add(flag: str, help: str, **kwargs: object) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        env_name = ENV_PREFIX + dest.upper()
        default = kwargs.pop("default", getattr(defaults, dest, None))
        if env.get(env_name, "") != "":  # empty means unset, as compose files pass them
            default = _from_env(env[env_name], kwargs)
        parser.add_argument(flag, default=default, help=f"{help} (env {env_name})", **kwargs)

    add("--host", "interface to bind")
    add("--port", "TCP port; 0 picks a free one", type=int)
    add("--model", "open_clip model name or a config shipped in server/model_configs")
    add("--pretrained", "open_clip pretrained tag, downloaded from the hub", metavar="TAG")
    add("--checkpoint", "local open_clip checkpoint file", type=Path, metavar="PATH")
    add("--random-init", "serve untrained weights (loudly logged)", action="store_true")
    add("--quick-gelu", "QuickGELU (OpenAI weights); auto: on for openai tags", choices=["auto", "on", "off"])
    add("--seed", "torch seed used before building the model", type=int)
    add("--device", "where the model runs", choices=["auto", "cpu", "cuda"])
    add("--ledger", "SQLite file that counts every query", type=Path)
    add("--api-keys", "comma-separated API keys", default="")
    add("--keys-file", "file with one API key per line", type=Path, default=None)
    add("--max-batch-images", "most images in one request", type=int)
    add("--max-request-bytes", "largest request body accepted", type=int)
    add("--max-texts", "most class-name x template texts in one task", type=int)
    add("--forward-batch", "images per model forward pass", type=int)
    add("--price-per-1k-images", "cost charged per 1,000 images", type=float)
    add("--quota-images", "images each key may send in all (default: no limit)", type=int)
    add("--log-level", "logging level", choices=["debug", "info", "warning", "error"])
    return parser


def _from_env(raw: str, kwargs: dict[str, object]) -> object:
    if kwargs.get("action") == "store_true":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    convert = kwargs.get("type", str)
    try:
        return convert(raw)  # type: ignore[operator]
    except ValueError as exc:
        raise SettingsError(f"environment value {raw!r} is not valid: {exc}") from exc


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
