"""The model gate: one call at a time, a waiting image forward goes before the next text chunk, a text
chunk is never starved; and on the real tiny model, texts are tokenised outside the gate and encoded
in chunks that let an image forward through mid-registration."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch

from server import parse_args
from server.serving.clip_model import ClipBackend
from server.serving.model_gate import IMAGE_TURNS, ModelGate
from tests.helpers import tiny_argv


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def start(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_waiting_image_forward_goes_before_a_waiting_text_chunk() -> None:
    gate, order = ModelGate(), []

    def take(kind: str) -> None:
        with gate.image() if kind == "image" else gate.text():
            order.append(kind)

    with gate.text():  # a chunk runs; a text chunk, then an image, start waiting
        text = start(lambda: take("text"))
        wait_until(lambda: len(gate._text_since) == 1, "the text chunk to wait")
        image = start(lambda: take("image"))
        wait_until(lambda: gate._images_waiting == 1, "the image to wait")
    text.join(10), image.join(10)
    assert order == ["image", "text"]


def test_a_text_chunk_goes_after_at_most_image_turns_image_calls() -> None:
    gate, order, stop = ModelGate(), [], threading.Event()

    def images() -> None:  # image forwards back to back: always one waiting
        while not stop.is_set():
            with gate.image():
                order.append("image")
                time.sleep(0.001)

    workers = [start(images) for _ in range(2)]
    wait_until(lambda: len(order) >= 4, "image traffic")
    with gate.text():
        seen = len(order)
    stop.set()
    for worker in workers:
        worker.join(10)
    assert seen - 4 <= IMAGE_TURNS + 2  # the chunk waited for a bounded number of image calls


def test_texts_are_tokenised_outside_the_gate_and_encoded_in_chunks(tmp_path) -> None:
    settings = parse_args(tiny_argv(tmp_path / "l.sqlite3", "--text-encode-chunk", "4"), env={})
    backend = ClipBackend.load(settings)
    calls: list[int] = []
    tokenizer = backend.tokenizer

    def counting_tokenizer(texts: list[str]) -> torch.Tensor:
        calls.append(len(texts))
        return tokenizer(texts)

    backend.tokenizer = counting_tokenizer
    names, templates = [f"class {i}" for i in range(500)], ["{}", "a {}", "the {}", "one {}"]
    encoded: list[torch.Tensor] = []
    with backend.gate.image():  # the model is busy: the first chunk is tokenised all the same
        worker = start(lambda: encoded.append(backend.encode_texts(names, templates)))
        wait_until(lambda: len(calls) == 1, "the first chunk's tokens")
    wait_until(lambda: len(calls) >= 10, "text chunks to run")
    backend.image_features(torch.zeros((1, 3, backend.image_size, backend.image_size)))
    chunks_when_the_image_ran = len(calls)
    worker.join(120)
    assert calls[0] == 4 and len(calls) == 500 * 4 // 4
    assert chunks_when_the_image_ran < len(calls)  # the image forward did not wait for all 500 chunks
    assert encoded[0].shape[0] == 500
