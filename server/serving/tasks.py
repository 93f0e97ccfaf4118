"""Task registrations, bounded: the limits a task must meet (checked before any text is formatted or
tokenised), and the class embeddings cached under a memory cap."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

from server.errors import APIError, echo
from shared.protocol import ErrorCode, TaskLimits, TaskRequest, template_problem

__all__ = ["TextFeatureCache", "check_task"]


def check_task(request: TaskRequest, limits: TaskLimits) -> None:
    """422 naming the first rule the task breaks: counts, then lengths, then the template grammar."""
    classes, templates = request.class_names, request.templates
    _at_most(len(classes), limits.max_classes, "class names", "max_classes")
    k = request.access.k
    if k is not None and k > len(classes):
        raise APIError(
            ErrorCode.VALIDATION_ERROR,
            f"access k={k} asks for more classes than the task's {len(classes)}",
            {"field": "access.k", "rule": "k_at_most_classes", "limit": len(classes), "received": k},
        )
    _at_most(len(templates), limits.max_templates, "templates", "max_templates")
    _at_most(len(classes) * len(templates), limits.max_texts, "class x template texts", "max_texts")
    for index, name in enumerate(classes):
        _not_longer(name, limits.max_class_name_chars, f"class_names[{index}]", "max_class_name_chars")
    for index, template in enumerate(templates):
        _not_longer(template, limits.max_template_chars, f"templates[{index}]", "max_template_chars")
        problem = template_problem(template)
        if problem is not None:
            raise APIError(
                ErrorCode.VALIDATION_ERROR,
                f"templates[{index}] {echo(template)}: {problem}",
                {"field": f"templates[{index}]", "rule": "template"},
            )


def _at_most(count: int, limit: int, what: str, rule: str) -> None:
    if count > limit:
        raise APIError(
            ErrorCode.VALIDATION_ERROR,
            f"task has {count} {what}; this server accepts at most {limit}",
            {"rule": rule, "limit": limit, "received": count},
        )


def _not_longer(text: str, limit: int, field: str, rule: str) -> None:
    if len(text) > limit:
        raise APIError(
            ErrorCode.VALIDATION_ERROR,
            f"{field} has {len(text)} characters; this server accepts at most {limit}",
            {"field": field, "rule": rule, "limit": limit, "received": len(text)},
        )


class TextFeatureCache:
    """Class embeddings (C, D) per task, least recently used evicted beyond ``max_bytes``; an evicted
    task's embeddings are recomputed on demand (deterministic, and never charged again)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, task_id: str, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """The task's embeddings, and True when this call computed them."""
        with self._lock:
            if task_id in self._entries:
                self._entries.move_to_end(task_id)
                return self._entries[task_id], False
        features = compute()  # outside the lock: a slow task must not stall every other task
        with self._lock:
            if task_id not in self._entries:
                self._entries[task_id] = features
                self._bytes += _size(features)
                while self._bytes > self.max_bytes and len(self._entries) > 1:
                    _, evicted = self._entries.popitem(last=False)
                    self._bytes -= _size(evicted)
        return features, True

    def __contains__(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._entries

    @property
    def nbytes(self) -> int:
        return self._bytes


def _size(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
