"""Who may use which access level (``shared.access``), each refusal a 403 ``access_denied`` raised
before anything is charged or any forward runs: a level the server does not offer, a level the key
may not use, and a route the task's level does not answer."""

from __future__ import annotations

from collections.abc import Collection

from server.errors import APIError
from shared.access import LEVELS_WITH_LOSS, LEVELS_WITH_OUTPUTS, Access, AccessLevel
from shared.protocol import Endpoint, ErrorCode

__all__ = ["refuse_key_level", "refuse_route", "refuse_unoffered_level"]

_REVEALS = {
    AccessLevel.LOGITS: "logits and losses",
    AccessLevel.LOSS: "losses only",
    AccessLevel.PROBABILITIES: "probabilities only",
    AccessLevel.TOP_K: "the top-k classes and their probabilities only",
    AccessLevel.LABEL: "the predicted label only",
}


def _names(levels: Collection[str]) -> list[str]:
    order = list(AccessLevel)
    return sorted({str(level) for level in levels}, key=lambda name: order.index(AccessLevel(name)))


def refuse_unoffered_level(access: Access, offered: Collection[AccessLevel]) -> None:
    if access.level not in offered:
        names = _names(offered)
        raise APIError(
            ErrorCode.ACCESS_DENIED,
            f"this server does not offer access level {access.level.value}; it offers {', '.join(names)}",
            {"level": access.level.value, "offered": names},
        )


def refuse_key_level(access: Access, key_levels: Collection[str] | None) -> None:
    """``key_levels`` None: the key may use every level the server offers."""
    if key_levels is not None and access.level.value not in key_levels:
        names = _names(key_levels)
        allowed = ", ".join(names) if names else "none"
        raise APIError(
            ErrorCode.ACCESS_DENIED,
            f"this API key may not register tasks at access level {access.level.value}; "
            f"its levels: {allowed}",
            {"level": access.level.value, "key_levels": names},
        )


def refuse_route(access: Access, endpoint: Endpoint) -> None:
    """The logits route answers the levels with outputs, the loss route those with losses."""
    answers = LEVELS_WITH_LOSS if endpoint is Endpoint.LOSS else LEVELS_WITH_OUTPUTS
    if access.level not in answers:
        level = access.level
        raise APIError(
            ErrorCode.ACCESS_DENIED,
            f"this task is at access level {access.describe()}, which reveals {_REVEALS[level]}: "
            f"the {endpoint.value} route does not answer it",
            {"level": level.value, "route": endpoint.value},
        )
