"""The one rule for init values (``miniprob.unconstrain``): ``param``, ``Constrained`` and
``PyroParam`` accept the same inits, as Pyro does, and hold the same unconstrained leaves."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob
from miniprob import Constrained
from miniprob.distributions import constraints
from miniprob.nn import PyroModule, PyroParam
from miniprob.unconstrain import constraint_transform, unconstrain

pyro = pytest.importorskip("pyro")

CONSTRAINTS = [
    constraints.real,
    constraints.positive,
    constraints.greater_than(1.0),
    constraints.unit_interval,
    constraints.simplex,
]

values = st.lists(
    st.floats(min_value=-3.0, max_value=3.0, allow_nan=False, width=32), min_size=3, max_size=3
)


def pyro_param_value(init, constraint):
    module = PyroModule()
    module.p = PyroParam(init, constraint)
    return module.p


def through_each_owner(init, constraint):
    """The value read back through ``param``, ``Constrained`` and ``PyroParam``, or the error
    each raised."""
    results = []
    for make in (
        lambda: miniprob.param("p", init, constraint=constraint),
        lambda: Constrained(init, constraint)(),
        lambda: pyro_param_value(init, constraint),
    ):
        miniprob.clear_param_store()
        try:
            results.append(make().detach())
        except ValueError as e:
            results.append(type(e))
    miniprob.clear_param_store()
    return results


@settings(max_examples=30, deadline=None)
@given(values, st.sampled_from(CONSTRAINTS))
def test_one_rule_for_every_owner_and_pyro_reads_back_the_same(xs, constraint):
    init = torch.tensor(xs)
    got = through_each_owner(init, constraint)
    transform = constraint_transform("p", constraint)
    with torch.no_grad():
        accepted = bool(torch.isfinite(transform.inv(init)).all())
    if not accepted:
        assert got == [ValueError] * 3
        return
    assert all(torch.equal(v, got[0]) for v in got)
    pyro.clear_param_store()
    assert torch.equal(got[0], pyro.param("p", init, constraint=constraint).detach())
    pyro.clear_param_store()


@settings(max_examples=30, deadline=None)
@given(values, st.sampled_from(CONSTRAINTS))
def test_values_in_the_support_round_trip(xs, constraint):
    transform = constraint_transform("p", constraint)
    with torch.no_grad():
        value = transform(torch.tensor(xs))  # a point of the support
        if not bool(torch.isfinite(transform.inv(value)).all()):
            return  # float32 rounded it onto the boundary (sigmoid(3) stays inside, exp too)
        u = unconstrain("p", value, constraint, transform)
        assert torch.allclose(transform(u), value, atol=1e-6)


def test_errors_name_the_owner_and_the_reason():
    positive = constraint_transform("PyroParam 'x'", constraints.positive)
    with pytest.raises(ValueError, match=r"PyroParam 'x': init value is not finite"):
        unconstrain(
            "PyroParam 'x'", torch.tensor([1.0, float("inf")]), constraints.positive, positive
        )
    with pytest.raises(ValueError, match=r"PyroParam 'x': init value lies outside the support"):
        unconstrain("PyroParam 'x'", torch.tensor(-2.0), constraints.positive, positive)
    with pytest.raises(TypeError, match=r"PyroParam 'x': init value should be a tensor"):
        unconstrain("PyroParam 'x'", "one", constraints.positive, positive)
    with pytest.raises(ValueError, match=r"'x'.*no transform to the constraint Boolean"):
        constraint_transform("PyroParam 'x'", constraints.boolean)
