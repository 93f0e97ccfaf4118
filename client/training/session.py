"""The connection a job works through: two API clients (training and evaluation queries are metered
apart), the server's ``/v1/info``, and the job's registered task."""

from __future__ import annotations

from dataclasses import dataclass

from client._retry import RetryPolicy
from client._sdk import BlackVIPClient
from client.training.config import TrainConfig
from shared.protocol import InfoResponse

__all__ = ["Session", "open_session", "retry_policy_for"]


def retry_policy_for(max_wait_seconds: float) -> RetryPolicy:
    """Enough doubling attempts (0.5 s up to 10 s apart) to cover ``max_wait_seconds``."""
    attempts, waited, delay = 1, 0.0, 0.5
    while waited < max_wait_seconds:
        waited += delay
        attempts += 1
        delay = min(delay * 2, 10.0)
    return RetryPolicy(max_attempts=attempts, base_delay=0.5, max_delay=10.0)


@dataclass
class Session:
    train_api: BlackVIPClient
    eval_api: BlackVIPClient
    info: InfoResponse
    task_id: str | None = None

    def register_task(self, class_names: list[str], templates: list[str]) -> str:
        prompts = [name.replace("_", " ") for name in class_names]
        self.task_id = self.train_api.register_task(prompts, templates).task_id
        return self.task_id

    def close(self) -> None:
        self.train_api.close()
        self.eval_api.close()


def open_session(config: TrainConfig) -> Session:
    """Both clients, and the server's info (its input size decides how the data is read)."""
    retry = retry_policy_for(config.max_wait_seconds)
    train_api = BlackVIPClient(config.url, config.api_key, retry=retry)
    eval_api = BlackVIPClient(config.url, config.api_key, retry=retry)
    return Session(train_api, eval_api, train_api.info())
