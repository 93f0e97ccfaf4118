"""``blackvip-server``: parse settings, configure logging, run uvicorn on the app factory; or, with a
first argument ``keys`` or ``ledger``, run an admin command on the ledger (``server.admin``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import cast

from server.admin import ADMIN_COMMANDS, admin_main
from server.flags import parse_args
from server.settings import ServerSettings, SettingsError

__all__ = ["main", "serve"]

log = logging.getLogger("server")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ADMIN_COMMANDS:
        return admin_main(argv)
    try:
        settings = parse_args(argv)
    except SettingsError as exc:
        print(f"blackvip-server: error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


def serve(settings: ServerSettings) -> int:
    """Run the server until it is stopped; 1 if the model or the ledger could not be opened."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info("settings: %s", settings.public_dict())
    # imported here, not above: the admin commands need neither the model (torch) nor uvicorn
    import uvicorn

    from server.api.app import create_app
    from server.api.connections import uvicorn_options

    failure: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        # uvicorn annotates this int but only hands it to asyncio.wait_for, which takes seconds as a
        # float: a grace of 2.5 s is honoured as 2.5 s, so the value is passed as it is.
        timeout_graceful_shutdown=cast(int, settings.shutdown_grace_s),
        **uvicorn_options(settings),  # the connection cap and the head deadline
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn exits 3 when the lifespan fails (e.g. the ledger cannot be opened)
        if not failure:
            raise
    if failure:
        print(f"blackvip-server: error: {failure[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
