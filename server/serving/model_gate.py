"""Who runs on the model next: one call at a time, image forwards before text encoding.

A task registration encodes up to ``max_texts`` texts (100,000 by default: about 30 s of the toy
model's text tower here). Run under one plain lock, it held every other key's logits for all that
time. The text encoder now runs in chunks (``--text-encode-chunk`` texts a call), and between chunks
an image forward that is waiting goes first, so another key waits for at most one chunk. Text is not
starved either: once ``IMAGE_TURNS`` image calls have gone past a waiting chunk, the chunk goes next.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["IMAGE_TURNS", "ModelGate"]

IMAGE_TURNS = 8  # image calls that may overtake one waiting text chunk


class ModelGate:
    """``with gate.image():`` holds the model for an image forward, ``with gate.text():`` for one chunk
    of text encoding. Not re-entrant: a holder never asks again."""

    def __init__(self) -> None:
        self._state = threading.Condition()
        self._busy = False
        self._images_waiting = 0
        self._image_calls = 0  # image calls that have held the model, ever
        self._text_since: list[int] = []  # for each waiting text chunk: image calls when it arrived

    @contextmanager
    def image(self) -> Iterator[None]:
        self._acquire_image()
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def text(self) -> Iterator[None]:
        self._acquire_text()
        try:
            yield
        finally:
            self._release()

    def _acquire_image(self) -> None:
        with self._state:
            self._images_waiting += 1
            try:
                self._state.wait_for(lambda: not self._busy and not self._text_overdue())
            finally:
                self._images_waiting -= 1
            self._busy = True
            self._image_calls += 1

    def _acquire_text(self) -> None:
        with self._state:
            arrived = self._image_calls
            self._text_since.append(arrived)
            try:
                self._state.wait_for(
                    lambda: (
                        not self._busy
                        and (self._images_waiting == 0 or self._image_calls - arrived >= IMAGE_TURNS)
                    )
                )
            finally:
                self._text_since.remove(arrived)
            self._busy = True

    def _text_overdue(self) -> bool:
        return any(self._image_calls - arrived >= IMAGE_TURNS for arrived in self._text_since)

    def _release(self) -> None:
        with self._state:
            self._busy = False
            self._state.notify_all()
