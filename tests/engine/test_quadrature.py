import numpy as np
import pytest
from mindscope.engine.quadrature import RULES, gauss_legendre, riemann_trapezoid


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("steps", [2, 7, 50])
def test_weights_sum_to_one_and_nodes_lie_in_the_unit_interval(name, steps):
    alphas, weights = RULES[name](steps)
    assert len(alphas) == len(weights) == steps
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert alphas.min() >= 0 and alphas.max() <= 1


def test_trapezoid_includes_both_ends_with_half_weight():
    alphas, weights = riemann_trapezoid(5)
    np.testing.assert_allclose(alphas, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(weights, [0.125, 0.25, 0.25, 0.25, 0.125])


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_gauss_legendre_is_exact_up_to_degree_2n_minus_1(steps):
    alphas, weights = gauss_legendre(steps)
    for degree in range(2 * steps):
        assert weights @ alphas**degree == pytest.approx(1 / (degree + 1), rel=1e-12)


def test_error_orders_on_a_smooth_integrand():
    """Trapezoid error falls 4x per doubling (order 2); Gauss-Legendre beats it by far at equal points."""
    exact = np.e - 1
    errors = [abs(weights @ np.exp(alphas) - exact) for alphas, weights in map(riemann_trapezoid, (9, 17))]
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.05)
    alphas, weights = gauss_legendre(4)
    assert abs(weights @ np.exp(alphas) - exact) < errors[1] / 1000


def test_gauss_legendre_nodes_are_computed_once_and_shared_read_only():
    from concurrent.futures import ThreadPoolExecutor

    from mindscope.engine.quadrature import _gauss_legendre

    _gauss_legendre.cache_clear()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: gauss_legendre(1000), range(16)))
    assert _gauss_legendre.cache_info().misses == 1  # sixteen requests at once, one eigenvalue problem
    assert all(alphas is answers[0][0] for alphas, _ in answers)
    with pytest.raises(ValueError):
        answers[0][0][0] = 0.5
