"""Quadrature rules on [0, 1] for path integrals, in plain numpy (no TensorFlow).

Each rule returns (alphas, weights) with weights summing to 1, so sum_k w_k g(alpha_k)
approximates the integral of g over [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Rule = Callable[[int], tuple[np.ndarray, np.ndarray]]


def riemann_left(steps: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(steps) / steps, np.full(steps, 1.0 / steps)


def riemann_right(steps: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(1, steps + 1) / steps, np.full(steps, 1.0 / steps)


def riemann_midpoint(steps: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)


def riemann_trapezoid(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """`steps` points including both ends; the end points carry half weight.

    Giving every point 1/steps instead (a common shortcut) makes the weights sum to less than 1
    and biases the integral short by about 1/steps.
    """
    if steps < 2:
        raise ValueError("the trapezoid rule needs at least 2 points")
    weights = np.full(steps, 1.0 / (steps - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, steps), weights


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact for polynomials up to degree 2*steps - 1; nodes are interior to (0, 1)."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1.0) / 2.0, weights / 2.0


RULES: dict[str, Rule] = {
    "riemann_left": riemann_left,
    "riemann_right": riemann_right,
    "riemann_midpoint": riemann_midpoint,
    "riemann_trapezoid": riemann_trapezoid,
    "gauss_legendre": gauss_legendre,
}
