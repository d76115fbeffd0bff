"""transform_to round trips through the ParamStore: a constrained value stored is read back
(within tolerance) over a finite unconstrained leaf, for every constraint params commonly use."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob as mp
from miniprob.distributions import constraints, transforms

F64 = torch.float64


@st.composite
def _vectors(draw, size, bound):
    floats = st.floats(-bound, bound)
    return torch.tensor(draw(st.lists(floats, min_size=size, max_size=size)), dtype=F64)


@st.composite
def cases(draw, kind, bound=5.0):
    """(constraint, unconstrained input of the right shape, entries within +-bound)."""
    n = draw(st.integers(1, 4))

    def vectors(size):
        return _vectors(size, bound)

    if kind == "interval":
        low = draw(st.floats(-10.0, 10.0))
        width = draw(st.floats(0.5, 20.0))
        return constraints.interval(low, low + width), draw(vectors(n))
    if kind == "greater_than":
        return constraints.greater_than(draw(st.floats(-10.0, 10.0))), draw(vectors(n))
    if kind == "lower_cholesky":
        return constraints.lower_cholesky, draw(vectors(n * n)).reshape(n, n)
    if kind == "corr_cholesky":
        d = n + 1
        return constraints.corr_cholesky, draw(vectors(d * (d - 1) // 2))
    constraint = {
        "real": constraints.real,
        "positive": constraints.positive,
        "unit_interval": constraints.unit_interval,
        "simplex": constraints.simplex,
    }[kind]
    return constraint, draw(vectors(n + (kind == "simplex")))


KINDS = [
    "real",
    "positive",
    "unit_interval",
    "interval",
    "greater_than",
    "simplex",
    "lower_cholesky",
    "corr_cholesky",
]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_transform_round_trip_through_the_param_store(kind, data):
    constraint, u = data.draw(cases(kind))
    value = transforms.transform_to(constraint)(u)
    assert bool(constraint.check(value).all())
    with mp.get_param_store().scope() as store:
        p = mp.param("p", value.clone(), constraint=constraint)
        leaf = store.unconstrained("p")
        assert leaf.is_leaf and leaf.requires_grad and leaf.dtype == F64
        assert bool(torch.isfinite(leaf).all())
        torch.testing.assert_close(p, value)
        torch.testing.assert_close(store["p"], value)
        torch.testing.assert_close(transforms.transform_to(constraint)(leaf), value)
        assert bool(constraint.check(store["p"]).all())
        p.sum().backward()
        assert bool(torch.isfinite(leaf.grad).all())
        store["p"] = value * 1  # assigning keeps the constraint
        assert store.get_constraint("p") is constraint
        torch.testing.assert_close(store["p"], value)
        copy = type(store)()
        copy.set_state(store.get_state())
        torch.testing.assert_close(copy["p"], value)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_round_trip_in_float32(kind, data):
    # A smaller range: near-degenerate correlations lose their inverse in float32.
    constraint, u = data.draw(cases(kind, bound=2.0))
    value = transforms.transform_to(constraint)(u.float())
    with mp.get_param_store().scope() as store:
        p = mp.param("p", value, constraint=constraint)
        assert bool(torch.isfinite(store.unconstrained("p")).all())
        torch.testing.assert_close(p, value, rtol=1e-4, atol=1e-5)
