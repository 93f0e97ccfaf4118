"""A dynamic batcher: requests from many threads share image-encoder forwards on one device.

Request threads call :meth:`DynamicBatcher.submit` and block; one worker thread per device takes
queued images, up to ``max_batch`` or until ``max_delay_s`` has passed since the oldest waiting
request arrived, runs one forward over them and hands each request exactly its own rows. Image
features do not depend on the task, so requests for different tasks share forwards; logits and
losses are computed per request afterwards, by the caller.

Fairness: a request is not split up front. The queue is FIFO and each forward takes, in queue order,
as many rows as still fit from each waiting request; a request with rows left goes to the back. So a
2,000-image request takes one forward's worth of rows per turn and a small request that arrives
behind it is in the next forward, not 32 forwards later.

Bounded: ``max_queue_images`` waiting images at most; beyond that :class:`QueueFullError` (the HTTP
layer answers 503 with Retry-After). A request larger than the bound is still taken when the queue
is empty, so no valid request can be refused forever.

With ``shapes`` every forward has one of those sizes: a batch runs as forwards of the largest shape,
and its rest is padded with zero images to the smallest shape that holds it. On CPU the features of
a row change in the last bits with the forward's size (measured: a batch of 1 differs from a batch of
4), but not with its position or its neighbours at a fixed size. One fixed shape therefore makes every
result independent of which other requests shared its batch; several shapes do too when they give a
row the same bits, which :func:`same_rows_at` checks on the real model before they are used.

A lone caller runs its own forward: when nothing is queued, no forward is running and ``callers``
says nobody else is being served, waiting ``max_delay_s`` could gather nothing, so the caller's thread
runs the same forward (same padding plan, same bits) that the worker would, without two thread
hand-offs. Anything that arrives meanwhile queues for the worker as before.

Lanes: a request may ask for another numeric path (``lanes``, e.g. "fp32" evaluation forwards on a
server that trains at fp16). A forward never mixes lanes: it takes the oldest request's lane and, in
queue order, only requests of that lane; the others keep their places for the next forward.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from server.serving.clip_model import fill_unit_pixels
from server.serving.plans import cheapest_plans, forward_plan

__all__ = ["BatcherClosedError", "DynamicBatcher", "ForwardObserver", "QueueFullError"]

# (seconds, images of requests, padding images) of one batch through the encoder, for metrics.
ForwardObserver = Callable[[float, int, int], None]


class QueueFullError(Exception):
    def __init__(self, queued: int, limit: int, requested: int) -> None:
        super().__init__(
            f"the server's queue holds {queued} images (at most {limit}); this request has {requested}"
        )
        self.queued, self.limit, self.requested = queued, limit, requested


class BatcherClosedError(RuntimeError):
    """The batcher stopped (the server is shutting down)."""


@dataclass(eq=False)
class _Job:
    """One request: its images, how many rows went to forwards, and its answer as it fills."""

    images: np.ndarray
    lane: str | None = None  # None: ``forward``; else the key of ``lanes``
    taken: int = 0  # rows handed to forwards (changed under the batcher's lock)
    done: int = 0  # rows answered (changed by the thread running the forward)
    passes: int = 0  # forwards this request's rows took part in
    features: torch.Tensor | None = None
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)


_Piece = tuple[_Job, int, int]  # (job, first row, rows)


class DynamicBatcher:
    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        max_batch: int,
        max_delay_s: float,
        max_queue_images: int,
        shapes: tuple[int, ...] | None = None,
        name: str = "batcher",
        callers: Callable[[], int] | None = None,
        observe: ForwardObserver | None = None,
        lanes: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
        shape_seconds: Mapping[int, float] | None = None,
    ) -> None:
        """``forward`` maps float32 pixels (B, 3, S, S) in [0, 1] (a buffer it may overwrite) to
        features (B, D); ``shapes`` None runs each batch as one forward of its own size.
        ``callers`` counts the requests now being served (queued or not): when every one of them is
        already queued, nobody can join the batch and the worker does not wait ``max_delay_s``.
        ``observe`` hears of every batch that went through the encoder. ``lanes`` are the other
        forwards a request may name (same contract as ``forward``); no forward mixes two lanes.
        ``shape_seconds`` (a forward's measured time at each of ``shapes``) makes each batch's plan the
        cheapest of them (``cheapest_plans``), else the largest shape while filled (``forward_plan``)."""
        self.forward, self.max_batch, self.max_delay_s = forward, max_batch, max_delay_s
        self.max_queue_images, self.callers, self.observe = max_queue_images, callers, observe
        self.shapes = tuple(sorted(shapes)) if shapes else None
        timed = bool(self.shapes and shape_seconds and all(size in shape_seconds for size in self.shapes))
        self._plans = cheapest_plans(max_batch, self.shapes, shape_seconds) if timed else {}  # type: ignore[arg-type]
        self.lanes = dict(lanes or {})
        self._queue: deque[_Job] = deque()
        self._queued_images = 0
        self._closing = False
        self._busy = False  # a forward is running, the worker's or a lone caller's
        self._cond = threading.Condition()
        self.forwards = 0  # batches run (each one forward, or several of the fixed shapes)
        self.images_taken = 0  # images handed to forwards (the answered ones and any in flight)
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    @property
    def queued_images(self) -> int:
        """Images waiting for a forward: the queue depth."""
        return self._queued_images

    def submit(self, images: np.ndarray, lane: str | None = None) -> tuple[torch.Tensor, int]:
        """Features (N, D) for images (N, 3, S, S) (uint8, or float in [0, 1]) and the number of
        forwards they took part in, through ``forward`` or the named lane. Blocks until every row is
        answered."""
        if lane is not None and lane not in self.lanes:
            raise ValueError(f"no lane {lane!r} (lanes: {sorted(self.lanes)})")
        job = _Job(images, lane)
        with self._cond:
            if self._closing:
                raise BatcherClosedError("the server is shutting down")
            if self._queued_images and self._queued_images + len(images) > self.max_queue_images:
                raise QueueFullError(self._queued_images, self.max_queue_images, len(images))
            alone = self._alone(len(images))
            if alone:
                self._busy = True
                job.taken, job.passes = len(images), 1
                self.images_taken += len(images)
            else:
                self._queue.append(job)
                self._queued_images += len(images)
                self._cond.notify_all()
        if alone:
            self._forward_then_free([(job, 0, len(images))])
        job.finished.wait()
        if job.error is not None:
            raise job.error
        assert job.features is not None
        return job.features, job.passes

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking requests, answer those already queued, stop the worker; False on timeout."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._worker.join(timeout)
        return not self._worker.is_alive()

    # -- the worker ----------------------------------------------------------------------------

    def _alone(self, images: int) -> bool:
        """Under the lock: whether a request of ``images`` may run its own forward (module doc)."""
        if self.callers is None or self._busy or self._queue or images > self.max_batch:
            return False
        return self.callers() <= 1

    def _forward_then_free(self, pieces: list[_Piece]) -> None:
        try:
            self._forward(pieces)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _run(self) -> None:
        while (pieces := self._gather()) is not None:
            self._forward_then_free(pieces)

    def _gather(self) -> list[_Piece] | None:
        """Wait for work and a free model, give late arrivals up to ``max_delay_s`` to fill the
        forward, take it."""
        with self._cond:
            self._cond.wait_for(lambda: (self._queue and not self._busy) or self._closing)
            if not self._queue:
                return None  # closing, and everything queued has been answered
            deadline = time.monotonic() + self.max_delay_s
            while self._queued_images < self.max_batch and not self._closing and self._others_coming():
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            self._busy = True
            return self._take()

    def _others_coming(self) -> bool:
        return self.callers is None or self.callers() > len(self._queue)

    def _take(self) -> list[_Piece]:
        """Rows for one forward, all of the oldest request's lane; other lanes keep their places."""
        pieces: list[_Piece] = []
        room, lane = self.max_batch, self._queue[0].lane
        passed: deque[_Job] = deque()  # other lanes' requests, in their order, ahead of the rest
        rests: list[_Job] = []
        while self._queue and room:
            job = self._queue.popleft()
            if job.lane != lane:
                passed.append(job)
                continue
            rows = min(room, len(job.images) - job.taken)
            pieces.append((job, job.taken, rows))
            job.taken += rows
            job.passes += 1
            room -= rows
            self._queued_images -= rows
            self.images_taken += rows
            if job.taken < len(job.images):
                rests.append(job)  # the rest waits its turn behind those already queued
        passed.extend(self._queue)
        passed.extend(rests)
        self._queue = passed
        return pieces

    def _forward(self, pieces: list[_Piece]) -> None:
        rows = sum(count for _, _, count in pieces)
        shape = pieces[0][0].images.shape[1:]
        plan = self.plan(rows)
        pixels = torch.zeros((sum(plan), *shape), dtype=torch.float32)  # real rows first, padding last
        offset = 0
        for job, start, count in pieces:
            fill_unit_pixels(pixels[offset : offset + count], job.images[start : start + count])
            offset += count
        started = time.perf_counter()
        try:
            features = self._encode(pixels, plan, pieces[0][0].lane)
        except BaseException as exc:  # every request in the forward gets the error, none hangs
            self._fail({job for job, _, _ in pieces}, exc)
            return
        if self.observe is not None:
            self.observe(time.perf_counter() - started, rows, len(pixels) - rows)
        self.forwards += 1
        offset = 0
        for job, start, count in pieces:
            if job.features is None:
                job.features = torch.empty((len(job.images), features.shape[1]), dtype=features.dtype)
            job.features[start : start + count] = features[offset : offset + count]
            offset += count
            job.done += count
            if job.done == len(job.images):
                job.finished.set()

    def plan(self, rows: int) -> list[int]:
        """The forward sizes a batch of ``rows`` rows runs as (real rows first, padding last)."""
        if self.shapes is None:
            return [rows]
        return self._plans.get(rows) or forward_plan(rows, self.shapes)

    def _encode(self, pixels: torch.Tensor, plan: list[int], lane: str | None) -> torch.Tensor:
        forward = self.forward if lane is None else self.lanes[lane]
        if len(plan) == 1:
            return forward(pixels)
        starts = np.cumsum([0, *plan[:-1]]).tolist()
        return torch.cat([forward(pixels[a : a + size]) for a, size in zip(starts, plan, strict=True)])

    def _fail(self, jobs: set[_Job], exc: BaseException) -> None:
        with self._cond:
            for job in jobs:
                if job in self._queue:  # its other rows will not be needed
                    self._queue.remove(job)
                    self._queued_images -= len(job.images) - job.taken
                job.error = exc
                job.finished.set()
