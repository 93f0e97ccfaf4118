"""The service's own exception: a status, a stable code and a message that names what is wrong.

Raised anywhere below the HTTP layer (validation, quotas, ledger); ``server.app`` turns it into the
one error body shape of ``shared.protocol.ErrorBody``.
"""

from __future__ import annotations

from typing import Any

from shared.protocol import ErrorCode

__all__ = ["APIError"]


class APIError(Exception):
    def __init__(
        self, status: int, code: ErrorCode, message: str, detail: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
