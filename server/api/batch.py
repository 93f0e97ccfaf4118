"""A logits or loss request's work after its body has arrived, in one worker thread: parse the msgpack
body, check images (and labels), then charge and serve it through the idempotency protocol.

One hand-off from the event loop per request, not one per step: each hand-off costs a thread switch
both ways, which on a small request is more CPU than the checks themselves. The steps and their errors
are those the routes ran one by one before (``server.api.inputs``, ``server.serving.idempotency``), in
the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from server.api.inputs import check_images, check_labels, parse_msgpack
from server.ledger import StoredTask
from server.serving.access import noise_seed
from server.serving.access_policy import refuse_route
from server.serving.idempotency import Served, charge_for
from server.serving.service import QueryService
from shared.protocol import Endpoint, LogitsRequest, LossRequest

__all__ = ["BatchCall", "serve_batch"]


@dataclass(frozen=True)
class BatchCall:
    """What the route knows once the body is in: who asks, for which task, through which route."""

    key_id: str
    request_id: str | None
    method: str
    path: str
    task: StoredTask
    body: bytes | bytearray


def serve_batch(service: QueryService, call: BatchCall, endpoint: Endpoint) -> Served:
    """Blocks (model, ledger): run in a worker thread. Errors are ``APIError``s, as each step's."""
    settings, task = service.settings, call.task
    refuse_route(task.access, endpoint)  # the route checked it before the body; this is for other callers
    # a noisy task's noise is drawn from the request itself: the same body, the same answer
    seed = noise_seed(call.key_id, task.task_id, call.body) if task.access.noise_std is not None else None
    if endpoint is Endpoint.LOGITS:
        logits = parse_msgpack(call.body, LogitsRequest)
        images = check_images(logits.images, service.backend.image_size, settings.max_batch_images)
        work = partial(service.logits, task, images, call.key_id, logits.precision.value, seed)
    else:
        loss = parse_msgpack(call.body, LossRequest)
        images = check_images(loss.images, service.backend.image_size, settings.max_batch_images)
        labels = check_labels(loss.labels, len(images), len(task.class_names))
        kind, gamma, precision = loss.loss.value, loss.focal_gamma, loss.precision.value
        work = partial(service.loss, task, images, labels, kind, gamma, call.key_id, precision, seed)
    charge = charge_for(call.key_id, endpoint, call.request_id, call.method, call.path, call.body)
    return service.idempotency.serve(charge, work)
