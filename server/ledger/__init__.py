"""The query ledger: every charge, key, quota, stored task and remembered answer, on a SQLite file (the
default) or a PostgreSQL database that replicas share.

It owns the facade the server uses (``Ledger``, in ``facade``), the two engines (``sqlite`` with its
``group_commit``, ``postgres``), their schemas and migrations (``schema``, ``schema_pg``), the SQL both
engines share (``db``, ``answers`` and ``answer_space``, ``keys``, ``quota``, ``reports``, ``tasks``),
the Protocols another store would implement (``interface``) and the usage export (``export``). It may
import ``shared`` and nothing else of the server: the serving, HTTP and admin packages import it, never
the other way round.
"""

from __future__ import annotations

from server.ledger.facade import (
    Answer,
    DuplicateRequestError,
    Ledger,
    LedgerLimits,
    LedgerUnavailableError,
    QueryRecord,
    QuotaExceededError,
    QuotaState,
    RejectionKey,
    Remembered,
    StoredTask,
    TaskLimitError,
    TaskStoreUsage,
    open_database,
)
from server.ledger.tasks import stored_task_bytes, task_refusal

__all__ = [
    "Answer",
    "DuplicateRequestError",
    "Ledger",
    "LedgerLimits",
    "LedgerUnavailableError",
    "QueryRecord",
    "QuotaExceededError",
    "QuotaState",
    "RejectionKey",
    "Remembered",
    "StoredTask",
    "TaskLimitError",
    "TaskStoreUsage",
    "open_database",
    "stored_task_bytes",
    "task_refusal",
]
