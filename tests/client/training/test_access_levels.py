"""The training path at each access level, against a stand-in for the SDK: where the losses come from
(the server's /loss, or the client from the level's outputs), evaluation, settings and the offer check."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from client._exceptions import BlackVIPError, ProtocolError
from client._outputs import Outputs
from client._sdk import LossResult
from client.data.images import ImageSet
from client.training import levels
from client.training.access import check_offered, level_price, offered_levels
from client.training.config import RESUMABLE, ConfigError, TrainConfig, build_config
from client.training.evaluate import evaluate
from client.training.job import _check_same_job
from client.training.objective import RemoteLoss
from client.training.prompters import NoPrompt, PaddingPrompt, PixelSpace
from client.training.scalars import ScalarLog
from client.training.session import Session
from shared.access import Access, AccessLevel, AccessLevelPrice
from shared.protocol import LossKind, RequestPrecision, TaskResponse
from tests.client.training.test_coordinator_prompters import _info
from tests.client.training.test_eval_precision import _serving

CLASSES = 4
SIZE = 8
WEIGHTS = np.random.default_rng(5).standard_normal((CLASSES, 3))


class FakeModel:
    """The SDK's logits/outputs/loss for a task at ``access``: logits from the images' channel means,
    every call recorded as (route, precision, loss kind)."""

    def __init__(self, access: Access | None = None) -> None:
        self.access = access or Access()
        self.calls: list[tuple[str, object, object]] = []

    def model_logits(self, images: np.ndarray) -> np.ndarray:
        means = np.asarray(images, dtype=np.float32).reshape(len(images), 3, -1).mean(axis=2)
        return (10.0 * means @ WEIGHTS.T).astype(np.float32)

    def logits(self, task_id: str, images: np.ndarray, precision: object = None) -> np.ndarray:
        self.calls.append(("logits", precision, None))
        return self.model_logits(images)

    def outputs(self, task_id: str, images: np.ndarray, precision: object = None) -> Outputs:
        self.calls.append(("outputs", precision, None))
        logits = self.model_logits(images).astype(np.float64)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        level = self.access.level
        if level is AccessLevel.LOGITS:
            return Outputs(logits=self.model_logits(images))
        if level is AccessLevel.PROBABILITIES:
            return Outputs(probabilities=p)
        if level is AccessLevel.TOP_K:
            order = np.argsort(-p, axis=1, kind="stable")[:, : self.access.k]
            return Outputs(probabilities=np.take_along_axis(p, order, axis=1), classes=order)
        return Outputs(labels=p.argmax(axis=1))

    def loss(self, task_id, images, labels, loss=LossKind.CROSS_ENTROPY, focal_gamma=2.0, precision=None):  # noqa: ANN001
        self.calls.append(("loss", precision, LossKind(loss)))
        logits = self.model_logits(images)
        return LossResult(
            levels.cross_entropy(logits, np.asarray(labels)).astype(np.float32),
            logits.argmax(axis=1) == labels,
        )


def _batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=generator), torch.randint(
        0, CLASSES, (n,), generator=generator
    )


def _remote(access: Access, **kwargs: Any) -> tuple[RemoteLoss, FakeModel]:
    api = FakeModel(access)
    info = _info(5, 2**24, image_size=SIZE)
    return RemoteLoss(api, info, "task", access=access, num_classes=CLASSES, **kwargs), api  # type: ignore[arg-type]


# --------------------------------------------------------------------------- training losses


@pytest.mark.parametrize("level", [AccessLevel.LOGITS, AccessLevel.LOSS])
def test_levels_with_a_loss_route_train_on_the_servers_loss(level: AccessLevel) -> None:
    remote, api = _remote(Access(level=level))
    images, labels = _batch()
    losses, correct = remote.query(images, labels)
    assert api.calls == [("loss", None, LossKind.CROSS_ENTROPY)] * 3  # 12 images, 5 per request
    logits = api.model_logits(images.numpy())
    assert losses == pytest.approx(levels.cross_entropy(logits, labels.numpy()), rel=1e-6)
    assert correct.tolist() == (logits.argmax(axis=1) == labels.numpy()).tolist()


def test_the_default_remote_loss_is_at_level_logits() -> None:
    api = FakeModel()
    remote = RemoteLoss(api, _info(5, 2**24, image_size=SIZE), "task")  # type: ignore[arg-type]
    assert remote.access == Access() and remote.num_classes is None
    remote.query(*_batch(3))
    assert api.calls == [("loss", None, LossKind.CROSS_ENTROPY)]


@pytest.mark.parametrize(
    "access",
    [
        Access(level=AccessLevel.PROBABILITIES),
        Access(level=AccessLevel.TOP_K, k=2),
        Access(level=AccessLevel.LABEL),
    ],
)
def test_client_levels_compute_losses_from_the_outputs(access: Access) -> None:
    remote, api = _remote(access)
    images, labels = _batch()
    losses, correct = remote.query(images, labels)
    assert [call[0] for call in api.calls] == ["outputs"] * 3 and {call[1] for call in api.calls} == {None}
    outputs = FakeModel(access).outputs("task", images.numpy())
    expected = levels.losses(outputs, labels.numpy(), CLASSES)
    assert losses.dtype == np.float64 and losses == pytest.approx(expected)
    assert correct.tolist() == levels.correct(outputs, labels.numpy()).tolist()


def test_the_probabilities_loss_is_the_servers_cross_entropy() -> None:
    images, labels = _batch()
    at_logits, _ = _remote(Access())[0].query(images, labels)
    at_probabilities, _ = _remote(Access(level=AccessLevel.PROBABILITIES))[0].query(images, labels)
    assert at_probabilities == pytest.approx(at_logits, rel=1e-5)


def test_the_oracle_evaluates_candidates_at_a_client_level() -> None:
    remote, api = _remote(Access(level=AccessLevel.LABEL))
    prompter = PaddingPrompt(SIZE, PixelSpace((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), pad=1)
    images, labels = _batch(6)
    vector = prompter.get_vector()
    evaluations = remote.oracle(prompter, images, labels)([vector, vector + 0.5])
    assert len(evaluations) == 2
    for evaluation in evaluations:
        assert evaluation.loss == pytest.approx(1.0 - evaluation.accuracy)  # the 0-1 loss: the error rate
    assert {call[0] for call in api.calls} == {"outputs"}


def test_focal_loss_is_refused_at_client_levels_only() -> None:
    with pytest.raises(ConfigError, match="focal loss is computed by the server's /loss"):
        _remote(Access(level=AccessLevel.PROBABILITIES), loss_kind=LossKind.FOCAL)
    remote, api = _remote(Access(level=AccessLevel.LOSS), loss_kind=LossKind.FOCAL)
    remote.query(*_batch(2))
    assert api.calls == [("loss", None, LossKind.FOCAL)]


def test_top_k_needs_the_number_of_classes_before_any_query() -> None:
    api = FakeModel()
    with pytest.raises(ConfigError, match="num_classes"):
        RemoteLoss(api, _info(5, 2**24, image_size=SIZE), "task", access=Access(level=AccessLevel.TOP_K, k=2))  # type: ignore[arg-type]
    assert api.calls == []


def test_the_floor_follows_the_rounding() -> None:
    assert _remote(Access(level=AccessLevel.PROBABILITIES))[0].floor == levels.PROBABILITY_FLOOR
    assert _remote(Access(level=AccessLevel.PROBABILITIES, decimals=3))[0].floor == pytest.approx(5e-4)


# --------------------------------------------------------------------------- evaluation


def _images(n: int = 11) -> ImageSet:
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, CLASSES, (n,), generator=generator)
    return ImageSet(pixels, labels, [f"c{i}" for i in range(CLASSES)])


def _reference(api: FakeModel, images: ImageSet) -> tuple[float, float]:
    """Accuracy and mean cross-entropy as the evaluator computed them before access levels."""
    logits = api.model_logits(images.pixels.float().numpy() / 255.0).astype(np.float64)
    labels = images.labels.numpy()
    shifted = logits - logits.max(axis=1, keepdims=True)
    losses = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(labels)), labels]
    return float(np.mean(logits.argmax(axis=1) == labels)), float(losses.mean())


def test_evaluation_at_level_logits_asks_logits_as_before() -> None:
    remote, api = _remote(Access())
    images = _images()
    result = evaluate(remote, NoPrompt(), images, batch_size=4)
    assert {call[0] for call in api.calls} == {"logits"}
    assert (result.accuracy, result.loss) == _reference(api, images)  # bit for bit
    assert result.macro_f1 is not None


@pytest.mark.parametrize("level", [AccessLevel.PROBABILITIES, AccessLevel.LABEL])
def test_evaluation_at_client_levels(level: AccessLevel) -> None:
    images = _images()
    at_logits = evaluate(_remote(Access())[0], NoPrompt(), images, batch_size=4)
    remote, api = _remote(Access(level=level))
    result = evaluate(remote, NoPrompt(), images, batch_size=4)
    assert {call[0] for call in api.calls} == {"outputs"}
    assert result.accuracy == at_logits.accuracy and result.macro_f1 == at_logits.macro_f1
    assert result.per_class_accuracy == at_logits.per_class_accuracy
    expected_loss = at_logits.loss if level is AccessLevel.PROBABILITIES else 1.0 - at_logits.accuracy
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)


def test_evaluation_at_level_loss_goes_through_the_loss_route() -> None:
    images = _images()
    at_logits = evaluate(_remote(Access())[0], NoPrompt(), images, batch_size=4)
    info = _info(5, 2**24, image_size=SIZE).model_copy(update={"serving": _serving(["serving", "fp32"])})
    api = FakeModel(Access(level=AccessLevel.LOSS))
    remote = RemoteLoss(api, info, "task", access=api.access, num_classes=CLASSES)  # type: ignore[arg-type]
    result = evaluate(remote, NoPrompt(), images, batch_size=4)
    assert set(api.calls) == {("loss", RequestPrecision.FP32, LossKind.CROSS_ENTROPY)}
    assert result.accuracy == at_logits.accuracy and result.loss == pytest.approx(at_logits.loss, rel=1e-6)
    assert result.per_class_accuracy == at_logits.per_class_accuracy
    assert result.mean_per_class_accuracy == pytest.approx(at_logits.mean_per_class_accuracy)
    assert result.macro_f1 is None  # what was predicted is not revealed


def test_scalars_skip_an_absent_macro_f1() -> None:
    class Writer:
        def __init__(self) -> None:
            self.tags: list[str] = []

        def add_scalar(self, tag: str, value: float, global_step: int, walltime: float) -> None:
            self.tags.append(tag)

        def flush(self) -> None:
            pass

    writer = Writer()
    ScalarLog(writer).evaluations(3, {"test": {"accuracy": 0.5, "loss": 1.0, "macro_f1": None}})
    assert writer.tags == ["test/accuracy", "test/loss"]


# --------------------------------------------------------------------------- settings and the server


def test_access_settings_build_the_tasks_access() -> None:
    assert build_config({"data": "d"}).access() == Access()
    config = build_config(
        {"data": "d", "access_level": "top-k", "top_k": 3, "access_decimals": 2, "access_noise_std": 0.5}
    )
    assert config.access() == Access(level=AccessLevel.TOP_K, k=3, decimals=2, noise_std=0.5)
    saved = config.saved()
    assert (saved["access_level"], saved["top_k"], saved["access_decimals"], saved["access_noise_std"]) == (
        "top-k", 3, 2, 0.5
    )  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"access_level": "top-k"}, "needs --top-k"),
        ({"top_k": 2}, "--top-k is for --access-level top-k"),
        ({"method": "bar", "access_level": "probabilities"}, "bar trains on the focal loss"),
        ({"access_level": "logit"}, "access_level"),
        ({"access_decimals": 9}, "access_decimals"),
        ({"access_noise_std": 0}, "access_noise_std"),
    ],
)
def test_inconsistent_access_settings_are_refused(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        build_config({"data": "d", **settings})


def test_bar_may_train_at_level_loss() -> None:
    assert (
        build_config({"data": "d", "method": "bar", "access_level": "loss"}).access().level
        is AccessLevel.LOSS
    )


def test_a_resume_may_not_change_the_access() -> None:
    fields = {"access_level", "top_k", "access_decimals", "access_noise_std"}
    assert not fields & TrainConfig.tagged(RESUMABLE)
    saved = build_config({"data": "d"}).saved()
    for name in fields:  # a checkpoint written before access levels resumes at their defaults
        saved.pop(name)
    _check_same_job(saved, build_config({"data": "d"}), set())
    with pytest.raises(BlackVIPError, match="access_level: 'logits' -> 'label'"):
        _check_same_job(
            build_config({"data": "d"}).saved(), build_config({"data": "d", "access_level": "label"}), set()
        )
    with pytest.raises(BlackVIPError, match="access_level"):
        _check_same_job(saved, build_config({"data": "d", "access_level": "label"}), set())
    noisy = build_config({"data": "d", "access_noise_std": 1.0})
    with pytest.raises(BlackVIPError, match="access_noise_std"):
        _check_same_job(noisy.saved(), build_config({"data": "d", "access_noise_std": 2.0}), set())


def test_an_older_server_offers_level_logits_only() -> None:
    older = _info(5, 2**24)
    assert older.access_levels is None and offered_levels(older) == [AccessLevel.LOGITS]
    check_offered(older, Access())
    with pytest.raises(ConfigError, match="does not offer access level label; it offers logits"):
        check_offered(older, Access(level=AccessLevel.LABEL))
    assert level_price(older, AccessLevel.LOGITS) == older.price_per_1k_images


def test_a_server_lists_its_levels_and_their_prices() -> None:
    offers = [AccessLevelPrice(level=AccessLevel.LOGITS, price_per_1k_images=2.0),
              AccessLevelPrice(level=AccessLevel.LABEL, price_per_1k_images=0.5)]  # fmt: skip
    info = _info(5, 2**24).model_copy(update={"access_levels": offers})
    check_offered(info, Access(level=AccessLevel.LABEL))
    with pytest.raises(ConfigError, match="it offers logits, label"):
        check_offered(info, Access(level=AccessLevel.TOP_K, k=2))
    assert level_price(info, AccessLevel.LABEL) == 0.5 and level_price(info, AccessLevel.LOGITS) == 2.0


class RegisteringApi:
    def __init__(self, answered: Access) -> None:
        self.answered = answered
        self.sent: list[object] = []

    def register_task(self, names: list[str], templates: list[str], access: Access | None) -> TaskResponse:
        self.sent.append(access)
        return TaskResponse(task_id="t", num_classes=len(names), class_names=names, templates=templates,
                            access=self.answered)  # fmt: skip


def test_the_session_registers_the_access_and_checks_the_answer() -> None:
    access = Access(level=AccessLevel.TOP_K, k=2)
    api = RegisteringApi(access)
    session = Session(api, api, _info(5, 2**24))  # type: ignore[arg-type]
    assert session.access == Access() and session.num_classes is None
    assert session.register_task(["a_b", "c", "d"], ["{}"], access) == "t"
    assert api.sent == [access] and session.access == access and session.num_classes == 3
    wrong = Session(RegisteringApi(Access()), api, _info(5, 2**24))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="registered at access logits, not the top-2 asked"):
        wrong.register_task(["a"], ["{}"], access)
