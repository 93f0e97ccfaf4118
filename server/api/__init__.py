"""The HTTP layer: the app factory (``app``), the routes and their handlers (``routes``), the app's state
(``state``), ``/v1/info``'s answer (``info``), API keys (``auth``), body reading and input checks
(``body``, ``inputs``), what clients may hold open: connections and head deadlines in uvicorn's protocol
(``connections``), per-key upload slots (``uploads``) and the memory budget (``admission``), per-key
rate limits (``rate_limit``), rejection counting (``rejections``), usage reports (``usage``), the
OpenAPI document and offline ``/docs`` (``openapi``, ``docs``), unexpected errors (``unexpected``) and
the ``/metrics`` endpoint (``metrics``).

It sits on top: it may import serving, the ledger, the server's settings, errors and metrics, and
``shared``; nothing below imports it.
"""

__all__: list[str] = []
