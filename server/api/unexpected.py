"""The last catch: an exception no handler took is answered 500 in the one error shape, and the
connection stays usable.

Starlette's outermost middleware answers such an exception through the app's ``Exception`` handler and
then raises it again, for the server to log; uvicorn closes the connection on any exception that reaches
it, so a client's next pooled request met a reset connection. Here the exception is answered and ends,
one layer inside: the connection is kept. One that comes after the answer has started cannot be answered
any more and still goes up (closing the connection is then the only honest end).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AnswerUnexpectedErrors"]


class AnswerUnexpectedErrors:
    def __init__(self, app: ASGIApp, answer: Callable[[Request, Exception], Response]) -> None:
        """``answer`` makes the 500 response (and logs the error)."""
        self.app, self.answer = app, answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception as exc:
            if started:
                raise
            await self.answer(Request(scope, receive), exc)(scope, receive, send)
