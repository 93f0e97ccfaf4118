"""Serving: what a charged call does apart from HTTP. The frozen open_clip model (``clip_model``) and who
runs on it next (``model_gate``: one call at a time, image forwards before text chunks), the
dynamic batcher that shares its forwards between requests (``batcher``, with the padded shapes of
``forward_shapes``), tasks and their cached text features (``tasks``), the query service that turns a
checked request into model work (``service``) and the idempotency rules that charge that work exactly
once (``idempotency``).

It may import the ledger, the server's settings, errors and metrics, and ``shared``; never the HTTP
layer or the admin commands. The model code (``clip_model``) knows nothing of FastAPI.
"""

__all__: list[str] = []
