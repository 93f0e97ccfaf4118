"""The connection a job works through: two API clients (training and evaluation queries are metered
apart), the server's ``/v1/info``, and the job's registered task."""

from __future__ import annotations

from dataclasses import dataclass

from client._exceptions import ProtocolError
from client._retry import RetryPolicy
from client._sdk import BlackVIPClient
from client.training.config import TrainConfig
from shared.access import Access
from shared.protocol import InfoResponse, TaskResponse

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
    task: TaskResponse | None = None  # as registered: its number of classes and access

    def register_task(
        self, class_names: list[str], templates: list[str], access: Access | None = None
    ) -> str:
        prompts = [name.replace("_", " ") for name in class_names]
        task = self.train_api.register_task(prompts, templates, access)
        if task.access != (access or Access()):  # trained at another level, the run would mislead
            raise ProtocolError(
                f"task {task.task_id} was registered at access {task.access.describe()}, "
                f"not the {(access or Access()).describe()} asked"
            )
        self.task, self.task_id = task, task.task_id
        return self.task_id

    @property
    def access(self) -> Access:
        """The registered task's access (level logits before a task is registered)."""
        return self.task.access if self.task is not None else Access()

    @property
    def num_classes(self) -> int | None:
        return self.task.num_classes if self.task is not None else None

    def close(self) -> None:
        self.train_api.close()
        self.eval_api.close()


def open_session(config: TrainConfig) -> Session:
    """Both clients, and the server's info (its input size decides how the data is read)."""
    retry = retry_policy_for(config.max_wait_seconds)
    train_api = BlackVIPClient(config.url, config.api_key, retry=retry)
    eval_api = BlackVIPClient(config.url, config.api_key, retry=retry)
    return Session(train_api, eval_api, train_api.info())
