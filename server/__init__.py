"""The black-box CLIP service: a frozen open_clip model behind an HTTP API that answers only
logits and losses, and counts every query in a durable ledger."""

from server.app import create_app
from server.settings import ServerSettings, parse_args

__all__ = ["ServerSettings", "create_app", "parse_args"]
