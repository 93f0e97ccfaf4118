"""Evolution strategies on the prompt's parameters, with pycma (Hansen's CMA-ES) as the engine.

One step is one generation: lambda candidates drawn, all sent in one oracle call (every candidate on the
step's batch), ranked by their losses, and the search distribution updated.

- :class:`CMAES` in a random subspace (``dim``): w = w_0 + A z, A (D, d) with N(0, 1/D) entries
  (:func:`client.training.subspace.projection`, from a generator of its own so a resume rebuilds it),
  z_0 = 0; full covariance over z.
- :class:`CMAES` over every parameter (``dim`` None): sep-CMA-ES, w = w_0 + z, diagonal covariance
  (pycma's ``CMA_diagonal``), as for large D the full matrix is out of reach.

Candidates z_i = m + sigma y_i, y_i ~ N(0, C), i = 1..lambda; the new mean is the weighted mean of the
best mu; C and sigma adapt (CSA for the full form; two-point adaptation, pycma's choice for a diagonal
run in large D, for sep). sigma_0 = r_0 / sqrt(n), n the dimension searched (d, or D), so that the
first step moves w by about r_0 (A preserves norms in expectation): r_0 = 10 gives sigma_0 1.0 at
d = 100, 0.447 at d = 500 and 0.067 over BlackVIP's 22,208 values.

The step reports w at the mean, w_0 + A m (what the loop evaluates and checkpoints), the mean loss and
accuracy over the generation, lambda evaluations, and sigma as its learning rate.

:class:`ESThenSPSA`: the ES for ``es_steps`` generations, then SPSA (the caller's, e.g. SPSA-GC) from
the ES mean, in the full space, its schedules counted from the switch. Its evaluations per step change
at the switch (lambda, then 2q): :meth:`evaluations_per_step` tells the next step's.

Determinism: pycma draws its normals through the ``randn`` option, here a numpy Generator of the
optimiser's own seeded from the run's seed, so numpy's global state is neither read nor written (pycma's
mirrored sampling and the two-point adaptation's self-check, which use it, are off). The state dict
holds the pickled strategy, Generator included, so a resume continues bit-identically. pycma writes no
files and prints nothing with ``verb_log`` 0 and ``verbose`` -9.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import Any

import cma
import numpy as np
import torch
from cma.sigma_adaptation import CMAAdaptSigmaTPA

from client.training.subspace import RandomSubspace
from client.training.zo import Evaluation, LossOracle, Optimizer, StepResult

__all__ = ["CMAES", "ESThenSPSA"]


class _Normal:
    """pycma's ``randn(*shape)`` from a Generator of our own (picklable, so it travels with the strategy)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


class _TwoPoint(CMAAdaptSigmaTPA):
    """pycma's two-point step-size adaptation without its self-check, which samples numpy's global RNG."""

    def check_consistency(self, es: Any) -> None:
        return None


class CMAES:
    """CMA-ES over z in a ``dim``-dimensional random subspace, or sep-CMA-ES over all of w (``dim`` None)."""

    def __init__(
        self, popsize: int, r0: float, seed: int, dim: int | None = None, projection_seed: int = 0
    ) -> None:
        if popsize < 2 or r0 <= 0 or (dim is not None and dim < 1):
            raise ValueError(f"CMA-ES needs popsize >= 2, r0 > 0, dim >= 1; got {popsize}, {r0}, {dim}")
        self.popsize, self.r0, self.seed, self.dim = popsize, r0, seed, dim
        self.projection_seed = projection_seed
        self.es: Any = None  # cma.CMAEvolutionStrategy, built at the first step (it needs D)
        self.origin: torch.Tensor | None = None
        self._subspace: RandomSubspace | None = None

    def evaluations_per_step(self) -> int:
        return self.popsize

    def _options(self, n: int) -> dict[str, Any]:
        return {
            "popsize": self.popsize,
            "randn": _Normal(self.seed),
            "seed": float("nan"),  # nan: pycma leaves numpy's global seed alone
            "CMA_mirrors": 0,  # mirrored sampling rounds with numpy's global RNG
            "CMA_diagonal": self.dim is None,
            "AdaptSigma": _TwoPoint if self.dim is None else True,
            "verbose": -9,
            "verb_disp": 0,
            "verb_log": 0,
        }

    def _start(self, params: torch.Tensor) -> None:
        self.origin = params.detach().clone()
        n = self.dim if self.dim is not None else params.numel()
        self.es = cma.CMAEvolutionStrategy(np.zeros(n), self.r0 / math.sqrt(n), self._options(n))
        self._build_subspace()

    def _build_subspace(self) -> None:
        if self.dim is not None and self.origin is not None:
            self._subspace = RandomSubspace(self.origin.numel(), self.dim, self.projection_seed)

    def to_params(self, z: np.ndarray | Sequence[float]) -> torch.Tensor:
        """w = w_0 + A z (sep: w_0 + z)."""
        assert self.origin is not None
        vector = torch.as_tensor(np.asarray(z), dtype=self.origin.dtype)
        if self._subspace is None:
            return self.origin + vector
        return self._subspace.to_params(self.origin, vector)

    def step(self, params: torch.Tensor, oracle: LossOracle, generator: torch.Generator) -> StepResult:
        if self.es is None:
            self._start(params)
        population = self.es.ask()  # lambda arrays z_i
        results = oracle([self.to_params(z) for z in population])
        losses = [result.loss for result in results]
        if all(math.isfinite(loss) for loss in losses):  # else the loop stops on the non-finite loss
            self.es.tell(population, losses)
        seen = mean_evaluation(results)
        sigma = float(self.es.sigma)
        return StepResult(self.to_params(self.es.mean), seen.loss, seen.accuracy, len(results), sigma)

    def state_dict(self) -> dict[str, Any]:
        strategy = None if self.es is None else pickle.dumps(self.es, protocol=pickle.HIGHEST_PROTOCOL)
        return {"strategy": strategy, "origin": self.origin}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Our own checkpoint, written by state_dict above: unpickling it is no wider trust than torch.load.
        self.es = None if state["strategy"] is None else pickle.loads(state["strategy"])  # noqa: S301
        self.origin = state["origin"]
        self._build_subspace()


class ESThenSPSA:
    """``es`` for the first ``es_steps`` steps, then ``spsa`` from where the ES mean left w."""

    def __init__(self, es: CMAES, spsa: Optimizer, es_steps: int) -> None:
        if es_steps < 1:
            raise ValueError(f"the ES phase needs at least one step, got {es_steps}")
        self.es, self.spsa, self.es_steps = es, spsa, es_steps
        self.k = 0  # steps taken

    def _current(self) -> Optimizer:
        return self.es if self.k < self.es_steps else self.spsa

    def evaluations_per_step(self) -> int:
        """The next step's: lambda during the ES phase, then SPSA's 2q."""
        return self._current().evaluations_per_step()

    def step(self, params: torch.Tensor, oracle: LossOracle, generator: torch.Generator) -> StepResult:
        result = self._current().step(params, oracle, generator)
        self.k += 1
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, "es": self.es.state_dict(), "spsa": self.spsa.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.k = state["k"]
        self.es.load_state_dict(state["es"])
        self.spsa.load_state_dict(state["spsa"])


def mean_evaluation(results: Sequence[Evaluation]) -> Evaluation:
    """The generation's mean loss and accuracy."""
    return Evaluation(
        sum(r.loss for r in results) / len(results), sum(r.accuracy for r in results) / len(results)
    )
