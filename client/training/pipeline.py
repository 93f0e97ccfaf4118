"""Requests in flight while the next one is built: an ordered map with at most ``in_flight`` calls
outstanding. With ``in_flight`` 1 it is a plain loop in the caller's thread.

The order of the results is the order of the inputs, whatever order the calls finish in, so a step
computed with requests in flight is the step computed one request at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

In = TypeVar("In")
Out = TypeVar("Out")


def ordered_map(
    call: Callable[[In], Out], items: Iterable[In], in_flight: int, pool: ThreadPoolExecutor | None
) -> Iterator[Out]:
    """``call(item)`` for each item, in order. ``items`` is consumed lazily: while up to ``in_flight``
    calls run on ``pool``, the caller's thread produces the next item (for the oracle: the next
    candidate's prompted images). An exception from a call is raised when its result is reached;
    calls already started are waited for first, so none is left running behind the caller's back."""
    if in_flight <= 1 or pool is None:
        yield from (call(item) for item in items)
        return
    pending: deque[Future[Out]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(call, item))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # an error upstream: let the started calls finish (their counts stand)
            future.cancel() or future.exception()
