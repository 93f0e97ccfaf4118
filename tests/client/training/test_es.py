"""Evolution strategies: a generation per step in one oracle call, descent on a quadratic, the mean mapped
through the projection, bit-identical resume, numpy's global RNG and the working folder left alone, the
hybrid's switch to SPSA-GC, the settings' validation and the plan's image counts."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from client.training.config import ES_OPTIMIZERS, ConfigError, build_config
from client.training.es import CMAES, ESThenSPSA
from client.training.methods import ES_SEED_OFFSET, PROJECTION_SEED_OFFSET, build_zo
from client.training.plan import evaluations_per_step, phases, steps_for_images
from client.training.subspace import projection
from client.training.zo import SPSA, Evaluation, Optimizer

D = 40
TARGET = torch.linspace(-1.0, 1.0, D)


class Quadratic:
    """L(w) = |w - target|^2 / D, accuracy 1 / (1 + L); records each call's candidates."""

    def __init__(self, target: torch.Tensor = TARGET) -> None:
        self.target = target
        self.calls: list[list[torch.Tensor]] = []

    def __call__(self, candidates: Sequence[torch.Tensor]) -> list[Evaluation]:
        self.calls.append([c.clone() for c in candidates])
        losses = [float(((c - self.target) ** 2).mean()) for c in candidates]
        return [Evaluation(loss, 1.0 / (1.0 + loss)) for loss in losses]


def loss(w: torch.Tensor) -> float:
    return float(((w - TARGET) ** 2).mean())


def run(
    optimizer: Optimizer, params: torch.Tensor, steps: int, oracle: Quadratic | None = None
) -> torch.Tensor:
    oracle = oracle or Quadratic()
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        params = optimizer.step(params, oracle, generator).params
    return params


def cma(dim: int | None = 8, popsize: int = 6) -> CMAES:
    return CMAES(popsize=popsize, r0=1.0, seed=7, dim=dim, projection_seed=11)


def test_a_generation_is_one_oracle_call_of_lambda_candidates_and_reports_the_mapped_mean() -> None:
    optimizer, oracle, w0 = cma(), Quadratic(), torch.zeros(D)
    result = optimizer.step(w0, oracle, torch.Generator())
    assert len(oracle.calls) == 1 and len(oracle.calls[0]) == 6 == result.evaluations
    assert optimizer.evaluations_per_step() == 6
    matrix = projection(D, 8, torch.Generator().manual_seed(11))  # the subspace's own stream
    mean = torch.as_tensor(np.asarray(optimizer.es.mean), dtype=torch.float32)
    assert torch.equal(result.params, w0 + matrix @ mean)
    losses = [loss(c) for c in oracle.calls[0]]
    assert result.loss == pytest.approx(sum(losses) / 6)
    assert result.learning_rate == pytest.approx(float(optimizer.es.sigma))


@pytest.mark.parametrize("dim", [8, None])
def test_cma_es_and_sep_cma_es_reduce_a_quadratic(dim: int | None) -> None:
    w0 = torch.zeros(D)
    final = run(cma(dim, popsize=10), w0, 30)
    best = 0.0  # sep: the target itself; in the subspace, the target's least-squares projection
    if dim is not None:
        matrix = projection(D, dim, torch.Generator().manual_seed(11))
        best = loss(matrix @ torch.linalg.lstsq(matrix, TARGET.unsqueeze(1)).solution.squeeze(1))
    assert loss(final) - best < 0.5 * (loss(w0) - best)


def test_sep_cma_es_moves_every_parameter_without_a_projection() -> None:
    optimizer, oracle = cma(None), Quadratic()
    result = optimizer.step(torch.zeros(D), oracle, torch.Generator())
    assert optimizer.es.N == D and optimizer._subspace is None
    assert bool((result.params != 0).all())
    assert optimizer.es.opts["CMA_diagonal"] is True


@pytest.mark.parametrize("dim", [8, None])
def test_resume_from_the_state_dict_is_bit_identical(dim: int | None) -> None:
    straight = run(cma(dim), torch.zeros(D), 6)
    first = cma(dim)
    halfway = run(first, torch.zeros(D), 3)
    buffer = io.BytesIO()
    torch.save({"optimizer": first.state_dict()}, buffer)  # as the checkpoint keeps it
    buffer.seek(0)
    resumed = cma(dim)
    resumed.load_state_dict(torch.load(buffer, weights_only=False)["optimizer"])
    assert torch.equal(run(resumed, halfway, 3), straight)


def test_numpy_global_rng_and_the_working_folder_are_left_alone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    np.random.seed(123)
    before = np.random.get_state(legacy=False)
    for dim in (8, None):
        run(cma(dim, popsize=4), torch.zeros(D), 8)  # popsize < 6: where pycma would mirror
    big = CMAES(popsize=4, r0=1.0, seed=1, dim=None)  # D > 299: pycma's two-point step-size adaptation
    run(big, torch.zeros(400), 6, Quadratic(torch.ones(400)))
    after = np.random.get_state(legacy=False)
    assert np.array_equal(before["state"]["key"], after["state"]["key"])
    assert [before["state"]["pos"], before["gauss"]] == [after["state"]["pos"], after["gauss"]]
    assert os.listdir(tmp_path) == []  # no outcmaes/ or any other file


def test_the_hybrid_switches_to_spsa_gc_at_the_set_step() -> None:
    spsa = SPSA(a=0.01, c=0.01, alpha=0.4, gamma=0.1, q=2)
    hybrid, oracle = ESThenSPSA(cma(), spsa, es_steps=3), Quadratic()
    params, generator, counts = torch.zeros(D), torch.Generator().manual_seed(0), []
    for _ in range(5):
        counts.append(hybrid.evaluations_per_step())
        result = hybrid.step(params, oracle, generator)
        assert result.evaluations == counts[-1]
        params = result.params
    assert counts == [6, 6, 6, 4, 4]  # lambda, then 2q
    assert [len(call) for call in oracle.calls] == counts
    assert spsa.k == 2  # SPSA's schedule counts from the switch
    es_mean = run(cma(), torch.zeros(D), 3)  # SPSA's first pair is w +- c D around the ES's last mean
    assert torch.allclose((oracle.calls[3][0] + oracle.calls[3][1]) / 2, es_mean, atol=1e-6)


def test_the_hybrid_resumes_bit_identically_across_the_switch() -> None:
    def build() -> ESThenSPSA:
        return ESThenSPSA(cma(), SPSA(a=0.01, c=0.01, alpha=0.4, gamma=0.1, q=2), es_steps=2)

    oracle, generator = Quadratic(), torch.Generator().manual_seed(0)
    straight, params = build(), torch.zeros(D)
    for _ in range(4):
        params = straight.step(params, oracle, generator).params
    first, resumed_params, generator = build(), torch.zeros(D), torch.Generator().manual_seed(0)
    for _ in range(2):
        resumed_params = first.step(resumed_params, oracle, generator).params
    resumed = build()
    resumed.load_state_dict(first.state_dict())
    for _ in range(2):
        resumed_params = resumed.step(resumed_params, oracle, generator).params
    assert torch.equal(resumed_params, params)


def test_build_zo_seeds_each_strategy_from_the_run() -> None:
    es = build_zo(build_config({"data": "d", "optimizer": "cma-es", "es_dim": 20, "seed": 3}))
    assert isinstance(es, CMAES) and es.dim == 20 and es.popsize == 10 and es.r0 == 10.0
    assert (es.seed, es.projection_seed) == (3 + ES_SEED_OFFSET, 3 + PROJECTION_SEED_OFFSET)
    sep = build_zo(build_config({"data": "d", "optimizer": "sep-cma-es"}))
    assert isinstance(sep, CMAES) and sep.dim is None
    hybrid = build_zo(build_config({"data": "d", "optimizer": "cma-es-spsa-gc", "es_steps": 5}))
    assert isinstance(hybrid, ESThenSPSA) and hybrid.es_steps == 5
    assert isinstance(hybrid.spsa, SPSA) and hybrid.spsa.q == 5 and hybrid.es.dim == 500


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "bar", "optimizer": "cma-es"}, "not bar"),
        ({"method": "zeroshot", "optimizer": "sep-cma-es"}, "not zeroshot"),
        ({"optimizer": "cma-es", "subspace_dim": 50}, "es-dim"),
        ({"optimizer": "cma-es-spsa-gc"}, "es-steps"),
        ({"optimizer": "cma-es", "es_steps": 3}, "es-steps"),
        ({"optimizer": "cma-es", "es_popsize": 1}, "es_popsize"),
        ({"optimizer": "cma-es", "es_dim": 0}, "es_dim"),
        ({"optimizer": "cma-es", "es_r0": 0}, "es_r0"),
    ],
)
def test_the_settings_refuse_what_an_evolution_strategy_cannot_run(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({"data": "d", **settings})


@pytest.mark.parametrize("method", ["blackvip", "vp-spsa"])
def test_every_strategy_builds_for_blackvip_and_vp(method: str) -> None:
    for name in ES_OPTIMIZERS:
        steps = {"es_steps": 2} if name == "cma-es-spsa-gc" else {}
        config = build_config({"data": "d", "method": method, "optimizer": name, **steps})
        assert evaluations_per_step(config) == 10


def test_the_plan_counts_each_phase_of_the_hybrid() -> None:
    config = build_config(
        {"data": "d", "optimizer": "cma-es-spsa-gc", "es_steps": 50, "es_popsize": 20, "batch_size": 64}
    )
    assert phases(config, 200) == [(50, 20), (150, 10)]
    assert phases(config, 30) == [(30, 20), (0, 10)]
    assert steps_for_images(config, 64_000) == 50  # 50 x 20 x 64
    assert steps_for_images(config, 160_000) == 50 + 150  # then 640 a step
    assert steps_for_images(config, 32_000) == 25
    assert steps_for_images(config, 64_320) is None
    plain = build_config({"data": "d", "optimizer": "cma-es", "batch_size": 128})
    assert phases(plain, 7) == [(7, 10)] and steps_for_images(plain, 64_000) == 50
