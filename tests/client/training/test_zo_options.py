"""The optimiser options beside the seed's SPSA-GC: update rules (plain, Adam, sign), clipping of the
estimate's norm (ZIP's sqrt(d) and a fixed threshold), and training in a random or low-rank subspace.
Each converges on a quadratic with one batched oracle call per step, matches its rule computed by hand,
and resumes exactly from its state dict; the default settings still build the seed's SPSA-GC."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Sequence

import pytest
import torch
from torch.testing import assert_close

from client.training.config import build_config
from client.training.methods import build_method, build_spsa
from client.training.subspace import LowRankSubspace, RandomSubspace, SubspaceOptimizer, projection
from client.training.zo import SPSA, Evaluation, Optimizer
from client.training.zo_rules import Adam, GradientCorrection, NormClip, Plain, Sign
from tests.client.training.test_coordinator_prompters import _info
from tests.client.training.test_zo import (
    CountingOracle,
    Direction,
    _loss_2d,
    _quadratic,
    gradient_correction_by_hand,
    spsa_by_hand,
)

SCHEDULE = {"a": 0.1, "c": 0.3, "alpha": 0.5, "gamma": 0.2, "o": 1.0}  # as spsa_by_hand's default


def _options(d: int) -> dict[str, Callable[[], Optimizer]]:
    """Each option, built fresh, with settings under which it converges on the quadratic below."""
    sgd = {"c": 0.01, "alpha": 0.4, "gamma": 0.1, "q": 5}
    return {
        "spsa-adam": lambda: SPSA(a=0.1, rule=Adam(0.9, 0.999), **sgd),
        "spsa-sign": lambda: SPSA(a=0.1, rule=Sign(), **sgd),
        "spsa-gc-zip-clip": lambda: SPSA(a=0.05, rule=GradientCorrection(0.9), clip=NormClip(), **sgd),
        "spsa-fixed-clip": lambda: SPSA(a=0.2, rule=Plain(), clip=NormClip(2.0), **sgd),
        "subspace": lambda: SubspaceOptimizer(
            SPSA(a=0.05, rule=GradientCorrection(0.9), **sgd), RandomSubspace(d, 8, seed=3)
        ),
        "low-rank": lambda: SubspaceOptimizer(
            SPSA(a=0.01, rule=GradientCorrection(0.9), **sgd), LowRankSubspace(d, 16, 2, seed=3)
        ),
    }


def _target(name: str, d: int, seed: int) -> list[float]:
    """A minimum the option can reach: anywhere for the full-space ones, inside the subspace otherwise."""
    generator = torch.Generator().manual_seed(seed)
    if name == "subspace":
        return (RandomSubspace(d, 8, seed=3).matrix @ torch.randn(8, generator=generator)).tolist()
    if name == "low-rank":
        reparam = LowRankSubspace(d, 16, 2, seed=3)
        theta = torch.randn(8, 1, generator=generator) @ torch.randn(1, 2, generator=generator)
        return (reparam.matrix @ theta.flatten()).tolist()
    return torch.randn(d, generator=generator).tolist()


# --------------------------------------------------------------------------- convergence


@pytest.mark.parametrize("name", list(_options(1)))
@pytest.mark.parametrize("seed", [0, 1])
def test_each_option_takes_one_oracle_call_per_step_and_the_loss_falls(name: str, seed: int) -> None:
    d, steps = 20, 200
    loss = _quadratic(_target(name, d, seed))
    oracle = CountingOracle(loss, d)
    optimiser = _options(d)[name]()
    generator = torch.Generator().manual_seed(100 + seed)
    w = torch.zeros(d)
    start = loss(w.tolist())
    for step in range(1, steps + 1):
        result = optimiser.step(w, oracle, generator)
        assert result.evaluations == optimiser.evaluations_per_step() == 10
        assert oracle.calls == step and oracle.per_call[-1] == 10
        assert result.params.shape == (d,)
        w = result.params
    end = loss(w.tolist())
    assert math.isfinite(end)
    assert end < 0.05 * start, (start, end)


# --------------------------------------------------------------------------- the rules by hand


def _adam_by_hand(beta1: float, beta2: float, eps: float) -> Direction:
    first, second = [0.0, 0.0], [0.0, 0.0]

    def direction(g: list[float], k: int) -> list[float]:
        for j in range(2):
            first[j] = beta1 * first[j] + (1 - beta1) * g[j]
            second[j] = beta2 * second[j] + (1 - beta2) * g[j] ** 2
        return [(first[j] / (1 - beta1**k)) / (math.sqrt(second[j] / (1 - beta2**k)) + eps) for j in range(2)]

    return direction


def _clip_by_hand(limit: float, seen: list[float]) -> Callable[[list[float]], list[float]]:
    def clip(g: list[float]) -> list[float]:
        norm = math.sqrt(sum(v * v for v in g))
        seen.append(norm)
        return [v * limit / norm for v in g] if norm > limit else g

    return clip


def _run(optimiser: SPSA, seed: int, steps: int) -> list[torch.Tensor]:
    generator, w = torch.Generator().manual_seed(seed), torch.tensor([0.25, -0.75])
    trajectory = []
    for _ in range(steps):
        w = optimiser.step(w, CountingOracle(_loss_2d, 2), generator).params
        trajectory.append(w)
    return trajectory


@pytest.mark.parametrize("q", [1, 3])
def test_adam_matches_its_rule_by_hand(q: int) -> None:
    expected, _ = spsa_by_hand([0.25, -0.75], 7, 4, _adam_by_hand(0.8, 0.95, 1e-8), q)
    got = _run(SPSA(q=q, rule=Adam(0.8, 0.95, 1e-8), **SCHEDULE), 7, 4)
    for k in range(4):
        assert_close(got[k], torch.tensor(expected[k]), rtol=1e-5, atol=1e-6)


def test_adams_first_step_moves_every_coordinate_by_a_1() -> None:
    """m^_1 / sqrt(v^_1) = g / |g|: the first step is a_1 sign(g), whatever g's scale."""
    start = torch.tensor([0.25, -0.75])
    adam = _run(SPSA(q=2, rule=Adam(), **SCHEDULE), 7, 1)[0]
    sign = _run(SPSA(q=2, rule=Sign(), **SCHEDULE), 7, 1)[0]
    a_1 = 0.1 / 2**0.5
    assert_close((adam - start).abs(), torch.full((2,), a_1), rtol=1e-6, atol=1e-7)
    assert_close(adam, sign, rtol=1e-6, atol=1e-7)


def test_sign_matches_its_rule_by_hand() -> None:
    expected, rates = spsa_by_hand([0.25, -0.75], 7, 4, lambda g, k: [math.copysign(1.0, v) for v in g], 2)
    got = _run(SPSA(q=2, rule=Sign(), **SCHEDULE), 7, 4)
    previous = torch.tensor([0.25, -0.75])
    for k in range(4):
        assert_close(got[k], torch.tensor(expected[k]), rtol=1e-6, atol=1e-7)
        assert_close((got[k] - previous).abs(), torch.full((2,), rates[k]))  # every coordinate moves a_k
        previous = got[k]


@pytest.mark.parametrize(("clip", "limit"), [(NormClip(), math.sqrt(2)), (NormClip(2.0), 2.0)])
def test_clipping_matches_zips_rule_by_hand(clip: NormClip, limit: float) -> None:
    norms: list[float] = []
    expected, _ = spsa_by_hand(
        [0.25, -0.75], 7, 4, gradient_correction_by_hand(0.9), 1, _clip_by_hand(limit, norms)
    )
    assert any(norm > limit for norm in norms) and any(norm <= limit for norm in norms)  # both branches
    got = _run(SPSA(q=1, rule=GradientCorrection(0.9), clip=clip, **SCHEDULE), 7, 4)
    for k in range(4):
        assert_close(got[k], torch.tensor(expected[k]), rtol=1e-5, atol=1e-6)
    unclipped = _run(SPSA(q=1, rule=GradientCorrection(0.9), **SCHEDULE), 7, 4)
    assert not torch.allclose(unclipped[-1], got[-1])


def test_norm_clip_scales_only_what_is_over_the_threshold() -> None:
    g = torch.tensor([3.0, 4.0])  # norm 5
    assert_close(NormClip(2.0)(g), torch.tensor([1.2, 1.6]))
    assert torch.equal(NormClip(5.0)(g), g) and torch.equal(NormClip(10.0)(g), g)
    assert NormClip().limit(16) == 4.0 and NormClip(0.3).limit(16) == 0.3  # ZIP's sqrt(d), or fixed
    assert torch.equal(NormClip()(torch.tensor([1.0, 1.0, 1.0, 1.0])), torch.ones(4))  # norm 2 = sqrt(4)
    assert_close(NormClip()(torch.tensor([4.0, 0.0, 0.0, 0.0])), torch.tensor([2.0, 0.0, 0.0, 0.0]))


# --------------------------------------------------------------------------- subspaces by hand


def test_projection_is_seeded_with_columns_of_about_unit_norm() -> None:
    matrix = projection(20_000, 6, torch.Generator().manual_seed(4))
    assert matrix.shape == (20_000, 6)
    norms = torch.linalg.vector_norm(matrix, dim=0)
    assert_close(norms, torch.ones(6), atol=0.03, rtol=0)
    cosines = (matrix.T @ matrix) / torch.outer(norms, norms)
    assert float((cosines - torch.eye(6)).abs().max()) < 0.05  # nearly orthogonal
    assert torch.equal(matrix, projection(20_000, 6, torch.Generator().manual_seed(4)))
    assert not torch.equal(matrix, projection(20_000, 6, torch.Generator().manual_seed(5)))


def test_subspace_candidates_and_step_by_hand() -> None:
    """Every candidate is w_0 + P z; the step is the inner rule's in z, mapped through P."""
    d, dim, c_1, a_1 = 5, 3, 0.3, 0.1 / 2**0.5
    reparam = RandomSubspace(d, dim, seed=9)
    seen: list[torch.Tensor] = []

    def oracle(candidates: Sequence[torch.Tensor]) -> list[Evaluation]:
        seen.extend(candidates)
        return [Evaluation(float(c.sum()), 0.0) for c in candidates]  # L(w) = sum(w)

    origin = torch.linspace(-1.0, 1.0, d)
    optimiser = SubspaceOptimizer(SPSA(q=2, rule=Plain(), **SCHEDULE), reparam)
    result = optimiser.step(origin, oracle, torch.Generator().manual_seed(2))
    assert len(seen) == 4 and result.evaluations == 4
    # the same perturbations, drawn from the same generator, in z's dimension
    generator = torch.Generator().manual_seed(2)
    from client.training.zo import spsa_perturbation

    deltas = [spsa_perturbation(dim, generator) for _ in range(2)]
    plus_minus = [sign * c_1 * delta for delta in deltas for sign in (1.0, -1.0)]
    for candidate, z in zip(seen, plus_minus, strict=True):
        assert_close(candidate, origin + reparam.matrix @ z)
    ones = reparam.matrix.sum(dim=0)  # L(w_0 + P z) = sum(w_0) + ones . z
    g = torch.stack([(float(ones @ (2 * c_1 * delta))) / (2 * c_1 * delta) for delta in deltas]).mean(0)
    assert_close(optimiser.z, -a_1 * g)
    assert_close(result.params, origin + reparam.matrix @ (-a_1 * g))


def test_low_rank_theta_by_hand_and_its_start() -> None:
    reparam = LowRankSubspace(d=30, dim=20, rank=2, seed=1)  # 8 rows x 2 columns (20 // 8)
    assert (reparam.rows, reparam.cols) == (8, 2)
    assert reparam.sizes() == (16, 2, 4, 2)
    start = reparam.initial()
    assert start.numel() == 16 + 2 + 4 + 2
    assert torch.equal(reparam.theta(start), torch.zeros(16))  # U = 0, b = 0: w = w_0
    assert torch.equal(start[16:18], torch.ones(2))  # s = 1
    z = torch.randn(start.numel(), generator=torch.Generator().manual_seed(0))
    u, s, v, b = z[:16].view(8, 2), z[16:18], z[18:22].view(2, 2), z[22:24]
    by_hand = [sum(u[i, r] * s[r] * v[j, r] for r in range(2)) + b[j] for i in range(8) for j in range(2)]
    assert_close(reparam.theta(z), torch.stack(by_hand))
    origin = torch.randn(30, generator=torch.Generator().manual_seed(1))
    assert_close(reparam.to_params(origin, z), origin + reparam.matrix @ torch.stack(by_hand))
    again = LowRankSubspace(d=30, dim=20, rank=2, seed=1)
    assert torch.equal(again.matrix, reparam.matrix) and torch.equal(again.initial(), start)


# --------------------------------------------------------------------------- resume


def _roundtrip(state: object) -> object:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("name", list(_options(1)))
def test_resume_from_state_dict_continues_exactly(name: str) -> None:
    d, total, split = 20, 12, 5
    oracle = CountingOracle(_quadratic(_target(name, d, 1)), d)

    def run(optimiser: Optimizer, generator: torch.Generator, w: torch.Tensor, steps: int) -> torch.Tensor:
        for _ in range(steps):
            w = optimiser.step(w, oracle, generator).params
        return w

    uninterrupted = run(_options(d)[name](), torch.Generator().manual_seed(42), torch.zeros(d), total)
    first, generator = _options(d)[name](), torch.Generator().manual_seed(42)
    w = run(first, generator, torch.zeros(d), split)
    saved = _roundtrip({"opt": first.state_dict(), "rng": generator.get_state(), "w": w})
    assert isinstance(saved, dict)
    run(first, generator, w, 1)  # the saved state must not move with the original

    resumed = _options(d)[name]()
    resumed.load_state_dict(copy.deepcopy(saved["opt"]))
    generator = torch.Generator()
    generator.set_state(saved["rng"])
    assert torch.equal(run(resumed, generator, saved["w"], total - split), uninterrupted)


def test_resume_without_adams_moments_diverges() -> None:
    """Control for the test above: Adam restarted with empty moments takes another path."""
    d = 8
    oracle = CountingOracle(_quadratic(_target("spsa-adam", d, 1)), d)
    paths = []
    for keep in (True, False):
        optimiser, generator = _options(d)["spsa-adam"](), torch.Generator().manual_seed(42)
        w = torch.zeros(d)
        for _ in range(4):
            w = optimiser.step(w, oracle, generator).params
        state = optimiser.state_dict()
        if not keep:
            state = {**state, "adam_first": None, "adam_second": None}
        fresh = _options(d)["spsa-adam"]()
        fresh.load_state_dict(state)
        for _ in range(3):
            w = fresh.step(w, oracle, generator).params
        paths.append(w)
    assert not torch.equal(paths[0], paths[1])


# --------------------------------------------------------------------------- settings -> optimiser


def test_the_default_settings_build_the_seeds_spsa_gc_exactly() -> None:
    """No flag, and the loc-digits preset the demo uses: SPSA-GC with the seed's a, c, alpha, gamma, o,
    q = 5, beta 0.9, no clipping, the prompt's own parameters; its steps are the seed's rule by hand."""
    for settings in ({"data": "d"}, {"data": "d", "dataset": "loc-digits-1x1"}):
        config = build_config(settings)
        method = build_method(config, _info(64, 10**8, image_size=32), total_steps=10)
        optimiser = method.optimizer
        assert type(optimiser) is SPSA
        assert (optimiser.a, optimiser.c, optimiser.alpha, optimiser.gamma, optimiser.o, optimiser.q) == (
            0.01,
            0.01,
            0.4,
            0.1,
            1.0,
            5,
        )
        assert type(optimiser.rule) is GradientCorrection and optimiser.rule.beta == 0.9
        assert optimiser.clip is None
    schedule = (0.01, 0.01, 0.4, 0.1, 1.0)
    expected, _ = spsa_by_hand([0.25, -0.75], 7, 4, gradient_correction_by_hand(0.9), 5, None, schedule)
    got = _run(build_spsa(build_config({"data": "d"})), 7, 4)
    for k in range(4):
        assert_close(got[k], torch.tensor(expected[k]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("settings", "rule", "clip"),
    [
        ({"optimizer": "spsa"}, Plain, None),
        ({"optimizer": "spsa-adam", "beta": 0.8, "beta2": 0.99}, Adam, None),
        ({"optimizer": "spsa-sign"}, Sign, None),
        ({"clip": "zip"}, GradientCorrection, NormClip()),
        ({"clip": "fixed", "clip_threshold": 2.5}, GradientCorrection, NormClip(2.5)),
    ],
)
def test_settings_choose_the_rule_and_the_clip(settings: dict[str, object], rule: type, clip: object) -> None:
    spsa = build_spsa(build_config({"data": "d", **settings}))
    assert type(spsa.rule) is rule and spsa.clip == clip
    if rule is Adam:
        assert (spsa.rule.beta1, spsa.rule.beta2) == (0.8, 0.99)


@pytest.mark.parametrize(("rank", "kind"), [(0, RandomSubspace), (3, LowRankSubspace)])
def test_a_subspace_wraps_the_methods_optimiser(rank: int, kind: type) -> None:
    config = build_config({"data": "d", "subspace_dim": 40, "subspace_rank": rank, "clip": "zip"})
    method = build_method(config, _info(64, 10**8, image_size=32), total_steps=10)
    optimiser = method.optimizer
    assert isinstance(optimiser, SubspaceOptimizer) and type(optimiser.reparam) is kind
    d = method.prompter.get_vector().numel()
    assert optimiser.reparam.matrix.shape == (d, 40)
    assert type(optimiser.inner) is SPSA and optimiser.inner.clip == NormClip()
    again = build_method(config, _info(64, 10**8, image_size=32), total_steps=10).optimizer
    assert isinstance(again, SubspaceOptimizer)
    assert torch.equal(again.reparam.matrix, optimiser.reparam.matrix)
    other_seed = build_method(config.model_copy(update={"seed": 2}), _info(64, 10**8, image_size=32), 10)
    assert isinstance(other_seed.optimizer, SubspaceOptimizer)
    assert not torch.equal(other_seed.optimizer.reparam.matrix, optimiser.reparam.matrix)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"clip": "fixed"}, "--clip-threshold"),
        ({"clip_threshold": 1.0}, "--clip-threshold"),
        ({"clip": "fixed", "clip_threshold": 0}, "clip_threshold"),
        ({"subspace_rank": 2}, "--subspace-dim"),
        ({"subspace_dim": 4, "subspace_rank": 2}, "--subspace-dim"),
        ({"subspace_dim": -1}, "subspace_dim"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"beta2": 1.0}, "beta2"),
    ],
)
def test_bad_option_settings_name_the_problem(settings: dict[str, object], problem: str) -> None:
    from client.training.config import ConfigError

    with pytest.raises(ConfigError, match=problem):
        build_config({"data": "d", **settings})
