"""The hidden logistic model that decides each synthetic row's click probability.

A row is a set of *logit fields*, each an integer index into the field's table (index 0 means
"missing"). The logit is::

    bias + sum_f w_f[x_f]                                  # first order
         + sum_{(a,b)} sum_k A[x_a,k] B[x_b,k]             # planted pairs (low-rank)
         + sum_{(a,b,c)} sum_k A[x_a,k] B[x_b,k] C[x_c,k]  # planted triples (trilinear)

Every factor table is centred under the field's own value distribution (estimated on a seeded
pilot sample), so a planted term has no first-order marginal (and a triple no pairwise one):
logistic regression on one-hot fields cannot see it, a model of crosses can. Each term is scaled
to a chosen standard deviation (in logit units) on the pilot, and the bias is solved so that the
pilot's mean probability hits the target CTR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FirstOrder:
    """First-order weights of one field: standard deviation of its logit contribution.

    ``smooth`` makes neighbouring indices get similar weights (a random walk), as suits ordered
    buckets such as the log-bucket of an integer count. ``rare_half`` shrinks the weights of
    rare values when indices are frequency ranks: index ``i`` is scaled by
    ``(1 + i / rare_half) ** -0.5`` (the long tail carries less signal than the head).
    """

    sd: float
    smooth: bool = False
    rare_half: float | None = None


@dataclass(frozen=True)
class Interaction:
    """A planted interaction among 2 or 3 fields: rank of the factors and term std (logit).

    ``rare_half`` shrinks the factors of rare values like :attr:`FirstOrder.rare_half` (for
    fields whose indices are frequency ranks), so the term lives mostly on learnable values.
    """

    fields: tuple[str, ...]
    rank: int
    scale: float
    rare_half: float | None = None

    def __post_init__(self) -> None:
        if len(self.fields) not in (2, 3):
            raise ValueError(f"an interaction joins 2 or 3 fields, got {self.fields}")


@dataclass(frozen=True)
class PlantedTerm:
    """A built interaction: one factor table ``(table size, rank)`` per field."""

    fields: tuple[str, ...]
    factors: tuple[np.ndarray, ...]

    def values(self, idx: Mapping[str, np.ndarray]) -> np.ndarray:
        """The term's logit contribution for each row."""
        prod = self.factors[0][idx[self.fields[0]]]
        for field, table in zip(self.fields[1:], self.factors[1:], strict=True):
            prod = prod * table[idx[field]]
        return prod.sum(axis=1)


@dataclass(frozen=True)
class PlantedModel:
    """Bias, first-order weight tables and interaction terms of the hidden logistic model."""

    bias: float
    first_order: dict[str, np.ndarray]
    terms: tuple[PlantedTerm, ...]

    def logit(self, idx: Mapping[str, np.ndarray]) -> np.ndarray:
        """The true logit of each row, from the rows' logit-field indices."""
        n = len(next(iter(idx.values())))
        z = np.full(n, self.bias)
        for field, weights in self.first_order.items():
            z += weights[idx[field]]
        for term in self.terms:
            z += term.values(idx)
        return z

    def proba(self, idx: Mapping[str, np.ndarray]) -> np.ndarray:
        """The true click probability of each row."""
        return sigmoid(self.logit(idx))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, float64."""
    return 1.0 / (1.0 + np.exp(-z))


def build_planted_model(
    rng: np.random.Generator,
    sizes: Mapping[str, int],
    first_order: Mapping[str, FirstOrder],
    interactions: tuple[Interaction, ...],
    pilot: Mapping[str, np.ndarray],
    target_ctr: float,
) -> PlantedModel:
    """Draw weights and factors, centre and scale them on ``pilot``, and solve the bias.

    ``sizes`` gives each logit field's table size; ``pilot`` holds a sample of index arrays drawn
    the same way as the real rows.
    """
    weights: dict[str, np.ndarray] = {}
    for field, spec in first_order.items():
        w = rng.standard_normal(sizes[field])
        if spec.smooth:
            w = np.cumsum(w) / np.sqrt(np.arange(1, len(w) + 1))
        if spec.rare_half is not None:
            w *= (1.0 + np.arange(len(w)) / spec.rare_half) ** -0.5
        contrib = w[pilot[field]]
        sd = contrib.std()
        weights[field] = (w - contrib.mean()) * (spec.sd / sd if sd > 0 else 0.0)
    terms = []
    for inter in interactions:
        factors = []
        for field in inter.fields:
            table = rng.standard_normal((sizes[field], inter.rank))
            if inter.rare_half is not None:
                table *= ((1.0 + np.arange(sizes[field]) / inter.rare_half) ** -0.5)[:, None]
            table -= table[pilot[field]].mean(axis=0)
            factors.append(table)
        term = PlantedTerm(inter.fields, tuple(factors))
        sd = term.values(pilot).std()
        factors[0] *= inter.scale / sd if sd > 0 else 0.0
        terms.append(PlantedTerm(inter.fields, tuple(factors)))
    model = PlantedModel(0.0, weights, tuple(terms))
    bias = solve_bias(model.logit(pilot), target_ctr)
    return PlantedModel(bias, weights, tuple(terms))


def solve_bias(z: np.ndarray, target_ctr: float) -> float:
    """The shift ``b`` with ``mean(sigmoid(z + b)) == target_ctr`` (bisection)."""
    if not 0.0 < target_ctr < 1.0:
        raise ValueError(f"target CTR must be in (0, 1), got {target_ctr}")
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if sigmoid(z + mid).mean() < target_ctr:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
