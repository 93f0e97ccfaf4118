"""The job's access level against the server: whether it offers the level, and the level's price."""

from __future__ import annotations

from client.training.config import ConfigError
from shared.access import Access, AccessLevel
from shared.protocol import InfoResponse

__all__ = ["check_offered", "level_price", "offered_levels"]


def offered_levels(info: InfoResponse) -> list[AccessLevel]:
    """The levels the server offers; one older than protocol 1.6 lists none and offers logits only."""
    if info.access_levels is None:
        return [AccessLevel.LOGITS]
    return [offer.level for offer in info.access_levels]


def check_offered(info: InfoResponse, access: Access) -> None:
    """Raise ConfigError, before the task is registered or anything queried, if the server lacks the level."""
    offered = offered_levels(info)
    if access.level not in offered:
        raise ConfigError(
            f"the server (protocol {info.protocol_version}) does not offer access level "
            f"{access.level.value}; it offers {', '.join(level.value for level in offered)}"
        )


def level_price(info: InfoResponse, level: AccessLevel) -> float:
    """The price per 1,000 images at ``level``: the level's own where the server lists one, else the
    server's ``price_per_1k_images`` (an older server's only price)."""
    for offer in info.access_levels or []:
        if offer.level is level:
            return offer.price_per_1k_images
    return info.price_per_1k_images
