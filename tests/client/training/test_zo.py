"""Zeroth-order optimisers: the batching contract, convergence on a quadratic, the seed's update rules
reproduced by hand, the perturbation distribution and exact resume from a state dict."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Sequence

import pytest
import torch
from torch.testing import assert_close

from client.training.zo import RGF, SPSA, Evaluation, StepResult, spsa_perturbation
from client.training.zo_rules import GradientCorrection, Plain


class CountingOracle:
    """A loss oracle over a Python function of the parameter list, counting calls and candidates."""

    def __init__(self, loss: Callable[[list[float]], float], d: int) -> None:
        self.loss, self.d = loss, d
        self.calls = 0
        self.candidates = 0
        self.per_call: list[int] = []

    def __call__(self, candidates: Sequence[torch.Tensor]) -> list[Evaluation]:
        self.calls += 1
        self.candidates += len(candidates)
        self.per_call.append(len(candidates))
        results = []
        for w in candidates:
            assert w.shape == (self.d,)
            # float64 arithmetic on the exact float32 values the optimiser sent
            results.append(Evaluation(self.loss([float(v) for v in w.tolist()]), 0.0))
        return results


def _quadratic(target: list[float]) -> Callable[[list[float]], float]:
    return lambda w: sum((wi - ti) ** 2 for wi, ti in zip(w, target, strict=True))


def _optimisers(total_steps: int) -> dict[str, tuple[SPSA | RGF, int]]:
    q = 5
    return {
        "spsa-gc": (SPSA(a=0.01, c=0.01, alpha=0.4, gamma=0.1, q=q, rule=GradientCorrection(0.9)), 2 * q),
        "spsa": (SPSA(a=0.05, c=0.01, alpha=0.4, gamma=0.1, q=q, rule=Plain()), 2 * q),
        "rgf": (RGF(init_lr=0.2, min_lr=0.01, total_steps=total_steps, q=q, beta=0.01), q + 1),
    }


# --------------------------------------------------------------------------- batching and convergence


@pytest.mark.parametrize("name", ["spsa-gc", "spsa", "rgf"])
@pytest.mark.parametrize("seed", [0, 1])
def test_one_oracle_call_per_step_and_the_loss_falls(name: str, seed: int) -> None:
    d, steps = 20, 200
    target = torch.randn(d, generator=torch.Generator().manual_seed(seed)).tolist()
    loss = _quadratic(target)
    oracle = CountingOracle(loss, d)
    optimiser, per_step = _optimisers(steps)[name]
    assert optimiser.evaluations_per_step() == per_step
    generator = torch.Generator().manual_seed(100 + seed)
    w = torch.zeros(d)
    start = loss(w.tolist())
    for step in range(1, steps + 1):
        result = optimiser.step(w, oracle, generator)
        assert isinstance(result, StepResult)
        assert result.evaluations == per_step
        assert oracle.calls == step  # exactly one (batched) oracle call per step
        assert oracle.per_call[-1] == per_step
        assert result.params.shape == (d,)
        assert result.params.dtype == torch.float32
        w = result.params
    assert oracle.candidates == steps * per_step
    end = loss(w.tolist())
    assert math.isfinite(end)
    assert end < 0.05 * start, (start, end)


def test_spsa_candidates_are_symmetric_pairs() -> None:
    d, q = 6, 3
    seen: list[torch.Tensor] = []

    def oracle(candidates: Sequence[torch.Tensor]) -> list[Evaluation]:
        seen.extend(c.clone() for c in candidates)
        return [Evaluation(float(c.sum()), 0.5) for c in candidates]

    w = torch.linspace(-1.0, 1.0, d)
    optimiser = SPSA(a=0.1, c=0.05, alpha=0.5, gamma=0.2, q=q)
    optimiser.step(w, oracle, torch.Generator().manual_seed(3))
    assert len(seen) == 2 * q
    c_1 = 0.05 / 1**0.2
    for i in range(q):
        plus, minus = seen[2 * i], seen[2 * i + 1]
        assert_close((plus + minus) / 2, w)  # w + c D and w - c D
        offset = (plus - minus) / (2 * c_1)
        assert bool(((offset.abs() >= 0.5 - 1e-5) & (offset.abs() < 1.0 + 1e-5)).all())
    assert not torch.equal(seen[0], seen[2])  # a fresh perturbation per sample


# --------------------------------------------------------------------------- the update rules by hand


def _loss_2d(w: list[float]) -> float:
    # The cubic and quartic terms make the central difference depend on c_k (on a quadratic it
    # would be exact for any c_k, and a wrong c_k schedule would go unnoticed).
    return (w[0] - 1.0) ** 2 + 2.0 * (w[1] + 0.5) ** 2 + 0.3 * w[0] + 0.5 * w[0] ** 3 + w[1] ** 4


Direction = Callable[[list[float], int], list[float]]  # (g, k) -> the step's direction, by hand


def spsa_by_hand(
    w0: list[float],
    seed: int,
    steps: int,
    direction: Direction,
    q: int = 1,
    clip: Callable[[list[float]], list[float]] | None = None,
    schedule: tuple[float, float, float, float, float] = (0.1, 0.3, 0.5, 0.2, 1.0),
) -> tuple[list[list[float]], list[float]]:
    """SPSA in plain Python floats on ``_loss_2d``: the seed's estimate, ``clip`` on it, then
    w <- w - a_k direction(g, k); returns w_1..w_steps and each a_k. ``schedule``: a, c, alpha, gamma, o."""
    a, c, alpha, gamma, o = schedule
    generator = torch.Generator().manual_seed(seed)
    w = list(w0)
    trajectory, rates = [], []
    for k in range(1, steps + 1):
        a_k = a / (k + o) ** alpha
        c_k = c / k**gamma
        # the optimiser draws all q perturbations first, in order
        deltas = [[float(v) for v in spsa_perturbation(2, generator).tolist()] for _ in range(q)]
        g = [0.0, 0.0]
        for delta in deltas:
            w_plus = [w[j] + c_k * delta[j] for j in range(2)]
            w_minus = [w[j] - c_k * delta[j] for j in range(2)]
            difference = _loss_2d(w_plus) - _loss_2d(w_minus)
            for j in range(2):
                g[j] += difference / (2.0 * c_k * delta[j]) / q  # mean over the q samples
        if clip is not None:
            g = clip(g)
        update = direction(g, k)
        w = [w[j] - a_k * update[j] for j in range(2)]
        trajectory.append(w)
        rates.append(a_k)
    return trajectory, rates


def gradient_correction_by_hand(beta: float) -> Direction:
    """The seed's SPSA-GC: m_1 = g, m_k = beta m_{k-1} + g, direction g + beta m_k."""
    momentum: list[float] = []

    def direction(g: list[float], k: int) -> list[float]:
        momentum[:] = list(g) if k == 1 else [beta * m + gj for m, gj in zip(momentum, g, strict=True)]
        return [gj + beta * m for gj, m in zip(g, momentum, strict=True)]

    return direction


def _spsa_by_hand(
    w0: list[float], seed: int, steps: int, gradient_correction: bool, q: int = 1
) -> tuple[list[list[float]], list[float]]:
    """The seed's SPSA(-GC) in plain Python floats; returns w_1..w_steps and each a_k."""
    direction = gradient_correction_by_hand(0.9) if gradient_correction else (lambda g, k: g)
    return spsa_by_hand(w0, seed, steps, direction, q)


@pytest.mark.parametrize(("gradient_correction", "q"), [(True, 1), (False, 1), (True, 2)])
def test_spsa_matches_the_seed_rule_step_by_step(gradient_correction: bool, q: int) -> None:
    seed, w0 = 7, [0.25, -0.75]
    expected, rates = _spsa_by_hand(w0, seed, 3, gradient_correction, q)
    rule = GradientCorrection(0.9) if gradient_correction else Plain()
    optimiser = SPSA(a=0.1, c=0.3, alpha=0.5, gamma=0.2, o=1.0, q=q, rule=rule)
    oracle = CountingOracle(_loss_2d, 2)
    generator = torch.Generator().manual_seed(seed)
    w = torch.tensor(w0)
    for k in range(3):
        result = optimiser.step(w, oracle, generator)
        w = result.params
        assert_close(w, torch.tensor(expected[k]), rtol=1e-5, atol=1e-6)
        assert result.learning_rate == pytest.approx(rates[k], rel=1e-12)
        assert result.evaluations == 2 * q
    assert optimiser.k == 3
    assert oracle.per_call == [2 * q] * 3
    # the learning rates are a / (k + 1)^0.5
    assert rates == pytest.approx([0.1 / 2**0.5, 0.1 / 3**0.5, 0.1 / 4**0.5])


def test_spsa_gc_and_plain_spsa_differ_after_the_first_step() -> None:
    """The real optimisers, same perturbations: SPSA-GC's first update is (1 + beta) times plain SPSA's."""
    trajectories = {}
    for correction in (True, False):
        rule = GradientCorrection(0.9) if correction else Plain()
        optimiser = SPSA(a=0.1, c=0.3, alpha=0.5, gamma=0.2, q=1, rule=rule)
        generator, w = torch.Generator().manual_seed(7), torch.tensor([0.25, -0.75])
        steps = []
        for _ in range(3):
            w = optimiser.step(w, CountingOracle(_loss_2d, 2), generator).params
            steps.append(w)
        trajectories[correction] = steps
    start = torch.tensor([0.25, -0.75])
    gc_move, plain_move = trajectories[True][0] - start, trajectories[False][0] - start
    assert_close(gc_move, 1.9 * plain_move, rtol=1e-5, atol=1e-7)  # g + beta * m_1, m_1 = g
    assert not torch.allclose(trajectories[True][2], trajectories[False][2])


def test_spsa_reported_loss_is_the_last_pair_mean() -> None:
    canned = [Evaluation(1.0, 0.0), Evaluation(3.0, 1.0), Evaluation(10.0, 0.25), Evaluation(20.0, 0.75)]

    def oracle(candidates: Sequence[torch.Tensor]) -> list[Evaluation]:
        assert len(candidates) == len(canned)
        return canned

    result = SPSA(a=0.1, c=0.1, alpha=0.5, gamma=0.1, q=2).step(
        torch.zeros(3), oracle, torch.Generator().manual_seed(0)
    )
    assert result.loss == pytest.approx(15.0)
    assert result.accuracy == pytest.approx(0.5)


def _rgf_by_hand(
    w0: list[float], seed: int, steps: int, q: int, beta: float, lr: Callable[[int], float]
) -> list[list[float]]:
    generator = torch.Generator().manual_seed(seed)
    d = len(w0)
    w = list(w0)
    trajectory = []
    for k in range(1, steps + 1):
        directions = []
        for _ in range(q):
            u = [float(v) for v in torch.randn(d, generator=generator).tolist()]
            norm = math.sqrt(sum(v * v for v in u))
            directions.append([v / norm for v in u])
        pivot = _loss_2d(w)
        g = [0.0] * d
        for u in directions:
            shifted = _loss_2d([w[j] + beta * u[j] for j in range(d)])
            for j in range(d):
                g[j] += (d / q) * u[j] * (shifted - pivot) / beta
        w = [w[j] - lr(k) * g[j] for j in range(d)]
        trajectory.append(w)
    return trajectory


def test_rgf_learning_rate_schedule() -> None:
    init, low, total = 5.0, 0.1, 100  # decays over 0.9 K = 90 steps
    optimiser = RGF(init_lr=init, min_lr=low, total_steps=total)
    assert optimiser.learning_rate(0) == pytest.approx(init)
    assert optimiser.learning_rate(1) == pytest.approx((init - low) * (1 - 1 / 90) ** 0.9 + low)
    assert optimiser.learning_rate(45) == pytest.approx((init - low) * 0.5**0.9 + low)
    assert optimiser.learning_rate(90) == pytest.approx(low)
    assert optimiser.learning_rate(91) == pytest.approx(low)
    assert optimiser.learning_rate(1000) == pytest.approx(low)
    rates = [optimiser.learning_rate(k) for k in range(0, 95)]
    assert all(x >= y for x, y in zip(rates, rates[1:], strict=False))  # non-increasing


def test_rgf_matches_the_seed_rule_for_two_steps() -> None:
    seed, w0, q, beta = 11, [0.25, -0.75], 2, 0.01
    optimiser = RGF(init_lr=0.5, min_lr=0.05, total_steps=10, q=q, beta=beta)
    expected = _rgf_by_hand(w0, seed, 2, q, beta, lambda k: (0.5 - 0.05) * (1 - k / 9) ** 0.9 + 0.05)
    oracle = CountingOracle(_loss_2d, 2)
    generator = torch.Generator().manual_seed(seed)
    w = torch.tensor(w0)
    for k in range(1, 3):
        result = optimiser.step(w, oracle, generator)
        assert result.evaluations == q + 1
        assert result.learning_rate == pytest.approx((0.5 - 0.05) * (1 - k / 9) ** 0.9 + 0.05)
        # the reported loss is L(w) at the current parameters (the pivot), not a perturbed one
        assert result.loss == pytest.approx(_loss_2d(w.tolist()), rel=1e-6)
        w = result.params
        assert_close(w, torch.tensor(expected[k - 1]), rtol=1e-4, atol=1e-5)
    assert oracle.per_call == [q + 1, q + 1]


def test_rgf_sends_the_pivot_first_then_unit_offsets() -> None:
    seen: list[torch.Tensor] = []

    def oracle(candidates: Sequence[torch.Tensor]) -> list[Evaluation]:
        seen.extend(candidates)
        return [Evaluation(0.0, 0.0) for _ in candidates]

    w = torch.tensor([0.5, -1.0, 2.0])
    RGF(init_lr=1.0, min_lr=0.1, total_steps=10, q=4, beta=0.01).step(w, oracle, torch.Generator())
    assert torch.equal(seen[0], w)
    for candidate in seen[1:]:
        assert float(torch.linalg.vector_norm(candidate - w)) == pytest.approx(0.01, rel=1e-4)


# --------------------------------------------------------------------------- perturbations


def test_spsa_perturbation_distribution_and_determinism() -> None:
    d = 4000
    p = spsa_perturbation(d, torch.Generator().manual_seed(5))
    assert p.shape == (d,)
    magnitude = p.abs()
    assert bool((magnitude >= 0.5).all()) and bool((magnitude < 1.0).all())
    positive = int((p > 0).sum())
    assert 0 < positive < d  # both signs appear
    assert abs(positive / d - 0.5) < 0.05
    assert float(magnitude.mean()) == pytest.approx(0.75, abs=0.02)  # U[0.5, 1)
    again = spsa_perturbation(d, torch.Generator().manual_seed(5))
    assert torch.equal(p, again)
    other = spsa_perturbation(d, torch.Generator().manual_seed(6))
    assert not torch.equal(p, other)


# --------------------------------------------------------------------------- resume


def _roundtrip(state: object) -> object:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("name", ["spsa-gc", "spsa", "rgf"])
def test_resume_from_state_dict_continues_exactly(name: str) -> None:
    d, total, split = 8, 12, 5
    target = torch.randn(d, generator=torch.Generator().manual_seed(1)).tolist()
    oracle = CountingOracle(_quadratic(target), d)

    optimiser, _ = _optimisers(total)[name]
    generator = torch.Generator().manual_seed(42)
    w = torch.zeros(d)
    for _ in range(total):
        w = optimiser.step(w, oracle, generator).params
    uninterrupted = w

    first, _ = _optimisers(total)[name]
    generator = torch.Generator().manual_seed(42)
    w = torch.zeros(d)
    for _ in range(split):
        w = first.step(w, oracle, generator).params
    saved = _roundtrip({"opt": first.state_dict(), "rng": generator.get_state(), "w": w})
    assert isinstance(saved, dict)
    # keep stepping the original past the save point: the saved state must not move with it
    first.step(w, oracle, generator)

    resumed, _ = _optimisers(total)[name]
    resumed.load_state_dict(copy.deepcopy(saved["opt"]))
    assert resumed.k == split
    generator = torch.Generator()
    generator.set_state(saved["rng"])
    w = saved["w"]
    for _ in range(total - split):
        w = resumed.step(w, oracle, generator).params
    assert torch.equal(w, uninterrupted)


def test_resume_without_momentum_diverges() -> None:
    """Control for the test above: resuming SPSA-GC with a zeroed momentum changes the trajectory."""
    d = 8
    target = torch.randn(d, generator=torch.Generator().manual_seed(1)).tolist()
    oracle = CountingOracle(_quadratic(target), d)

    def run(keep_momentum: bool) -> torch.Tensor:
        opt = SPSA(a=0.01, c=0.01, alpha=0.4, gamma=0.1, q=2)
        generator = torch.Generator().manual_seed(42)
        w = torch.zeros(d)
        for _ in range(4):
            w = opt.step(w, oracle, generator).params
        state = opt.state_dict()
        if not keep_momentum:
            state = {"k": state["k"], "momentum": torch.zeros(d)}
        fresh = SPSA(a=0.01, c=0.01, alpha=0.4, gamma=0.1, q=2)
        fresh.load_state_dict(state)
        for _ in range(3):
            w = fresh.step(w, oracle, generator).params
        return w

    assert not torch.equal(run(True), run(False))
