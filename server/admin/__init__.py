"""The operator's commands on the ledger, run with or without a server: ``blackvip-server keys ...``
(``keys``) and ``blackvip-server ledger export`` (``cli``, which also dispatches both).

It may import the ledger, the server's settings and ``shared``; never serving or the HTTP layer, so an
admin command loads neither torch nor open_clip.
"""

from __future__ import annotations

from server.admin.cli import ADMIN_COMMANDS, AdminError, admin_main

__all__ = ["ADMIN_COMMANDS", "AdminError", "admin_main"]
