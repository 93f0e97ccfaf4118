"""What ``/v1/info`` says: the model's input, the limits, prices and how the server serves, all from the
settings and the loaded model (never the weights)."""

from __future__ import annotations

from server.api.state import AppState
from server.serving.service import QueryService
from shared.codec import ACCEPTED_IMAGE_DTYPES, OUTPUT_DTYPE
from shared.protocol import PROTOCOL_VERSION, InfoResponse, LossKind, RequestPrecision, ServingInfo

__all__ = ["info_response"]


def info_response(state: AppState, service: QueryService) -> InfoResponse:
    settings, backend = state.settings, service.backend
    return InfoResponse(
        protocol_version=PROTOCOL_VERSION,
        model=settings.model,
        pretrained=settings.weights_label,
        image_size=backend.image_size,
        mean=backend.mean,
        std=backend.std,
        accepted_dtypes=list(ACCEPTED_IMAGE_DTYPES),
        output_dtype=OUTPUT_DTYPE,
        losses=[kind.value for kind in LossKind],
        max_batch_images=settings.max_batch_images,
        max_request_bytes=settings.max_request_bytes,
        price_per_1k_images=settings.price_per_1k_images,
        price_per_1k_texts=settings.price_per_1k_texts,
        quota_images=settings.quota_images,
        auth_required=state.keyring.auth_required,
        task_limits=settings.task_limits,
        idempotency_window_s=settings.idempotency_window_s,
        replay_ttl_s=settings.replay_ttl,
        serving=ServingInfo(
            device=str(backend.device),
            precision=backend.precision,
            channels_last=backend.channels_last,
            warmup_s=round(backend.warmup_s, 4),
            batcher=service.batcher is not None,
            max_forward_batch=settings.max_forward_batch,
            max_queue_delay_ms=settings.max_queue_delay_ms,
            max_queue_images=settings.max_queue_images,
            batch_padding=settings.batch_padding,
            forward_shapes=list(service.forward_shapes) if service.forward_shapes else None,
            request_precisions=[precision.value for precision in RequestPrecision],
        ),
        connections=settings.connection_limits,
        access_levels=settings.level_price_list,
    )
