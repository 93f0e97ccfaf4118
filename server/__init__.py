"""The black-box CLIP service: a frozen open_clip model behind an HTTP API that answers only
logits and losses, and counts every query in a durable ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.flags import parse_args
from server.settings import ServerSettings

if TYPE_CHECKING:
    from server.api.app import create_app

__all__ = ["ServerSettings", "create_app", "parse_args"]


def __getattr__(name: str) -> Any:
    # The app pulls in torch and open_clip (seconds to import); the admin commands
    # (`blackvip-server keys ...`) and anything else that only needs settings or the ledger skip it.
    if name == "create_app":
        from server.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
