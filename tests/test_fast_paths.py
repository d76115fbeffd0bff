"""The distributions' shortcuts (miniprob.distributions.fast_paths, Independent.log_prob) give
bit for bit torch's values and gradients, and leave every other case to torch's code."""

import warnings

import pytest
import torch
import torch.distributions as td
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob.distributions as dist

floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)
positive = st.floats(1e-3, 1e3, width=32)
shapes = st.sampled_from([(), (1,), (3,), (2, 3)])


def tensors(draw, shape, elements):
    n = 1
    for s in shape:
        n *= s
    return torch.tensor(draw(st.lists(elements, min_size=n, max_size=n))).reshape(shape)


def grads(fn, *leaves):
    """The value of ``fn(*leaves)`` and the gradients of its sum, through exp/mul nodes as at
    a real site (the leaves' gradients collect contributions from several paths)."""
    leaves = [x.detach().clone().requires_grad_() for x in leaves]
    value = fn(*leaves)
    value.sum().backward()
    return value.detach(), [x.grad for x in leaves]


def assert_bitwise(a, b):
    """Equal bit for bit (NaN where the other has NaN: an overflowing draw gives NaN in both)."""
    (va, ga), (vb, gb) = a, b

    def same(x, y):
        assert x.dtype == y.dtype == torch.float32 and torch.equal(x.isnan(), y.isnan())
        bits = [torch.where(t.isnan(), 0.0, t).view(torch.int32) for t in (x, y)]
        assert torch.equal(*bits)  # -0.0 is not 0.0 here

    same(va, vb)
    for x, y in zip(ga, gb, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            same(x, y)


@settings(max_examples=60, deadline=None)
@given(st.data(), shapes)
def test_normal_log_prob_and_gradients_match_torch_bitwise(data, shape):
    loc = tensors(data.draw, shape, floats)
    log_scale = tensors(data.draw, shape, st.floats(-5, 5, width=32))
    noise = tensors(data.draw, shape, floats)

    def score(cls):
        def fn(loc, log_scale, noise):
            scale = log_scale.exp()
            x = loc + noise * scale  # the value depends on loc and scale too, as with rsample
            lp = cls(loc, scale).log_prob(x) - cls(loc * 2, scale).log_prob(x)
            return lp + cls(loc, 1.5).log_prob(x) + cls(0.5, scale).log_prob(x)

        return fn

    assert_bitwise(
        grads(score(dist.Normal), loc, log_scale, noise),
        grads(score(td.Normal), loc, log_scale, noise),
    )


def same_bits(x, y):
    """Equal dtype, shape and bits (NaN where the other has NaN), float32 or float64."""
    assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x.isnan(), y.isnan())
    as_int = torch.int32 if x.dtype == torch.float32 else torch.int64
    assert torch.equal(*[torch.where(t.isnan(), 0.0, t).view(as_int) for t in (x, y)])


@settings(max_examples=100, deadline=None)
@given(
    st.data(),
    shapes,
    st.sampled_from([0.0, 0, -0.0, 0.5, "tensor"]),
    st.sampled_from([1.0, 1, 1.5, "tensor"]),
    st.sampled_from([(), (1,), (3,), (2, 1), (2, 3), (4, 2, 3)]),
    st.sampled_from([torch.float32, torch.float64]),
    st.booleans(),
)
def test_normal_of_a_zero_loc_or_a_unit_scale_matches_torch_bitwise(
    data, shape, loc, scale, value_shape, value_dtype, expand
):
    # A loc of +0 or a scale of 1 given as a number drops ops from log_prob: the values, their
    # dtype and shape (broadcasting), and the gradients stay torch's, before and after expand.
    loc_t = tensors(data.draw, shape, floats)
    log_scale = tensors(data.draw, shape, st.floats(-5, 5, width=32))
    value = tensors(data.draw, value_shape, floats).to(value_dtype)

    def score(cls):
        def fn(value, loc_t, log_scale):
            d = cls(
                loc_t if loc == "tensor" else loc, log_scale.exp() if scale == "tensor" else scale
            )
            if expand:
                d = d.expand((5, 1, 1, 1, *d.batch_shape))
            return d.log_prob(value * 1.0)

        return fn

    (va, ga), (vb, gb) = (
        grads(score(cls), value, loc_t, log_scale) for cls in (dist.Normal, td.Normal)
    )
    same_bits(va, vb)
    for x, y in zip(ga, gb, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            same_bits(x, y)


def test_normal_marks_of_zero_loc_and_unit_scale_follow_changes():
    x = torch.tensor([0.5, -1.0])
    d = dist.Normal(0.0, 1.0)
    d.loc.add_(1.0)  # written in place: no longer the +0 it was built from
    assert torch.equal(d.log_prob(x), td.Normal(1.0, 1.0).log_prob(x))
    base = dist.Normal(0.0, 1.0)
    d = base.expand([2])
    base.scale.mul_(3.0)  # an expanded view shares its base's version counter
    assert torch.equal(d.log_prob(x), td.Normal(0.0, 3.0).log_prob(x))
    d = dist.Normal(0.0, 1.0)
    d.loc, d.scale = torch.tensor(2.0), torch.tensor(0.5)  # replaced
    assert torch.equal(d.log_prob(x), td.Normal(2.0, 0.5).log_prob(x))
    assert dist.Normal(-0.0, 2.0)._zero_loc is None and dist.Normal(True, 1.0)._unit_scale is None


def test_standard_normal_log_prob_takes_three_ops():
    def ops(d):
        x = torch.zeros(3, requires_grad=True)
        node, names = d.log_prob(x).grad_fn, []
        while node is not None and type(node).__name__ != "AccumulateGrad":
            names.append(type(node).__name__)
            node = next(f for f, _ in node.next_functions if f is not None)
        return names

    assert ops(dist.Normal(0.0, 1.0)) == ["SubBackward0", "DivBackward0", "PowBackward0"]
    assert ops(dist.Normal(0.0, 1.0).expand([3])) == ops(dist.Normal(0.0, 1.0))
    assert len(ops(dist.Normal(torch.zeros(3), 1.0))) == 4  # value - loc stays
    assert len(ops(td.Normal(0.0, 1.0))) == 6
    assert dist.LogNormal(0.0, 1.0).base_dist._unit_scale is not None
    assert (
        getattr(dist.LogNormal(0.0, 1.0, validate_args=True).base_dist, "_unit_scale", None) is None
    )


@settings(max_examples=40, deadline=None)
@given(st.data(), shapes)
def test_log_normal_log_prob_and_gradients_match_torch_bitwise(data, shape):
    loc = tensors(data.draw, shape, st.floats(-5, 5, width=32))
    log_scale = tensors(data.draw, shape, st.floats(-3, 3, width=32))
    noise = tensors(data.draw, shape, st.floats(-5, 5, width=32))

    def score(cls):
        def fn(loc, log_scale, noise):
            scale = log_scale.exp()
            x = (loc + noise * scale).exp()
            lp = cls(loc, scale).log_prob(x) + cls(0.0, 1.0).log_prob(x)
            return lp + cls(0, scale).log_prob(x) + cls(loc, 1.0).log_prob(x)

        return fn

    ours, theirs = score(dist.LogNormal), score(td.LogNormal)
    assert_bitwise(grads(ours, loc, log_scale, noise), grads(theirs, loc, log_scale, noise))


@settings(max_examples=40, deadline=None)
@given(st.data(), shapes, st.sampled_from(["probs", "logits"]))
def test_bernoulli_log_prob_and_gradients_match_torch_bitwise(data, shape, kind):
    raw = tensors(data.draw, shape, st.floats(-10, 10, width=32))
    value = tensors(data.draw, shape, st.sampled_from([0.0, 1.0]))

    def score(cls):
        def fn(raw):
            arg = raw.sigmoid() if kind == "probs" else raw * 1.0
            return cls(**{kind: arg}).log_prob(value)

        return fn

    assert_bitwise(grads(score(dist.Bernoulli), raw), grads(score(td.Bernoulli), raw))


@pytest.mark.parametrize("n", [1, 2])
def test_independent_log_prob_matches_torch_bitwise(n):
    torch.manual_seed(0)
    loc = torch.randn(4, 3, 5)
    x = torch.randn(4, 3, 5)

    def score(cls_normal, cls_independent):
        return lambda loc: cls_independent(cls_normal(loc, 1.5), n).log_prob(x)

    expected = grads(score(td.Normal, td.Independent), loc)
    assert_bitwise(grads(score(dist.Normal, dist.Independent), loc), expected)
    # a non-contiguous log density (a transposed value): same geometry, same bits
    xt = torch.randn(4, 5, 3).transpose(-1, -2)
    got = dist.Independent(dist.Normal(loc, 1.5), n).log_prob(xt)
    assert torch.equal(got, td.Independent(td.Normal(loc, 1.5), n).log_prob(xt))


@pytest.mark.parametrize(
    "loc, scale",
    [
        (0.0, 1.0),
        (2, 3),
        (torch.zeros(3), 1.0),
        (0.5, torch.ones(2, 1)),
        (torch.zeros(3), torch.ones(2, 1)),
        (torch.zeros((), dtype=torch.float64), torch.ones(3)),
        (torch.zeros(2), 1e300),  # out of float32's range: inf, as torch makes it
        (-1e300, torch.ones(2, dtype=torch.float16)),
        (2**70, 1.0),
        (torch.zeros(2, dtype=torch.int64), 1.5),
        (0.1, 1 / 3),
    ],
)
def test_normal_built_like_torch(loc, scale):
    ours, theirs = dist.Normal(loc, scale), td.Normal(loc, scale)
    for name in ("loc", "scale", "mean", "stddev"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b), name
    assert ours.batch_shape == theirs.batch_shape and ours.event_shape == theirs.event_shape
    x = torch.linspace(-2, 2, 6).reshape(6, *[1] * len(ours.batch_shape))
    assert torch.equal(ours.log_prob(x), theirs.log_prob(x))


def test_normal_of_python_numbers_uses_the_default_dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert dist.Normal(0.0, 1.0).loc.dtype == torch.float64
    finally:
        torch.set_default_dtype(old)


def test_shortcuts_keep_the_argument_tensors_themselves():
    loc, scale, logits = torch.zeros(3), torch.ones(3), torch.zeros(3)
    d = dist.Normal(loc, scale)
    assert d.loc is loc and d.scale is scale
    assert dist.Bernoulli(logits=logits).logits is logits


def test_validation_still_goes_through_torch():
    with pytest.raises(ValueError, match="scale"):
        dist.Normal(torch.zeros(2), -torch.ones(2), validate_args=True)
    with pytest.raises(ValueError, match="probs"):
        dist.Bernoulli(probs=torch.full((2,), 1.5), validate_args=True)
    d = dist.Normal(torch.zeros(2), torch.ones(2), validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError):
        dist.LogNormal(torch.zeros(2), torch.ones(2), validate_args=True).log_prob(-torch.ones(2))
    b = dist.Bernoulli(probs=torch.full((2,), 0.5), validate_args=True)
    with pytest.raises(ValueError):
        b.log_prob(torch.tensor([0.5, 1.0]))


def test_bernoulli_broadcasts_values_like_torch():
    logits = torch.randn(3)
    value = torch.tensor([[0.0], [1.0]])
    assert torch.equal(
        dist.Bernoulli(logits=logits).log_prob(value), td.Bernoulli(logits=logits).log_prob(value)
    )
    assert torch.equal(
        dist.Bernoulli(0.3).log_prob(torch.ones(2)), td.Bernoulli(0.3).log_prob(torch.ones(2))
    )
    with pytest.raises(ValueError, match="probs.*logits|Either"):
        dist.Bernoulli()


def test_expand_and_second_derivatives_work_through_the_shortcuts():
    loc = torch.tensor([0.5, -1.0], requires_grad=True)
    d = dist.Normal(loc, torch.ones(2)).expand([4, 2])
    assert d.batch_shape == (4, 2)
    lp = d.log_prob(torch.zeros(4, 2)).sum()
    (g,) = torch.autograd.grad(lp, loc, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), loc)
    assert torch.equal(g.detach(), -4 * loc.detach()) and torch.equal(h, torch.full((2,), -4.0))


def test_jit_trace_goes_through_torch_without_warnings_of_ours():
    def f(loc, x):
        lp = dist.Normal(loc, torch.ones(3)).log_prob(x)
        return lp + dist.Bernoulli(logits=loc).log_prob(torch.ones(3))

    loc, x = torch.zeros(3), torch.randn(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(f, (loc, x), check_trace=False)
    assert not [w for w in caught if "miniprob" in w.filename]
    y = torch.randn(3)
    expected = td.Normal(loc + 1, torch.ones(3)).log_prob(y)
    expected = expected + td.Bernoulli(logits=loc + 1).log_prob(torch.ones(3))
    assert torch.equal(traced(loc + 1, y), expected)


@pytest.mark.parametrize("sample_shape", [(), (4,), torch.Size([2, 1])], ids=str)
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)], ids=str)
def test_normal_rsample_draws_what_torch_draws(shape, sample_shape):
    loc = torch.randn(shape)
    log_scale = torch.randn(shape)

    def draw(cls):
        torch.manual_seed(5)
        return grads(lambda m, s: cls(m, s.exp()).rsample(sample_shape), loc, log_scale)

    assert_bitwise(draw(dist.Normal), draw(td.Normal))
    expanded = dist.Normal(loc, 1.0).expand((5, *shape))
    torch.manual_seed(6)
    ours = expanded.rsample()
    torch.manual_seed(6)
    assert torch.equal(ours, td.Normal(loc, 1.0).expand((5, *shape)).rsample())


@pytest.mark.parametrize("validate", [False, True])
@pytest.mark.parametrize("batch", [(3,), (2, 3), (4, 1, 3)], ids=str)
def test_expand_builds_what_torch_builds(batch, validate):
    loc, scale = torch.randn(3), torch.rand(3) + 0.5
    pairs = [
        (dist.Normal(loc, scale, validate_args=validate), td.Normal(loc, scale, validate)),
        (dist.Normal(0.0, 1.0, validate_args=validate), td.Normal(0.0, 1.0, validate)),
        (dist.LogNormal(loc, scale, validate_args=validate), td.LogNormal(loc, scale, validate)),
        (dist.LogNormal(0.0, 1.0, validate_args=validate), td.LogNormal(0.0, 1.0, validate)),
        (
            dist.Normal(loc, scale, validate_args=validate).to_event(1),
            td.Independent(td.Normal(loc, scale, validate), 1),
        ),
    ]
    value = torch.rand(batch) + 0.5
    for ours, theirs in pairs:
        event = ours.event_shape
        a, b = (
            ours.expand(batch[: len(batch) - len(event)]),
            theirs.expand(batch[: len(batch) - len(event)]),
        )
        assert type(a) is type(ours) and a._validate_args == ours._validate_args
        assert (a.batch_shape, a.event_shape) == (b.batch_shape, b.event_shape)
        for x, y in ((a, b), (a.base_dist, b.base_dist)) if hasattr(a, "base_dist") else ((a, b),):
            if hasattr(y, "loc"):
                assert x.loc.shape == y.loc.shape and x.loc.stride() == y.loc.stride()
                assert torch.equal(x.loc, y.loc) and torch.equal(x.scale, y.scale)
        assert torch.equal(a.log_prob(value), b.log_prob(value))
        torch.manual_seed(0)
        drawn = a.rsample()
        torch.manual_seed(0)
        assert torch.equal(drawn, b.rsample())


def test_expand_of_subclasses_and_of_changed_transforms_goes_through_torch():
    class Shifted(dist.Normal):
        def __init__(self, loc):
            super().__init__(loc + 1.0, 1.0)

    d = Shifted(torch.zeros(2)).expand([3, 2])
    assert type(d) is Shifted and d.batch_shape == (3, 2) and torch.equal(d.loc, torch.ones(3, 2))
    log_normal = dist.LogNormal(0.0, 1.0)
    log_normal.transforms = [td.transforms.ExpTransform(), td.transforms.AffineTransform(0.0, 2.0)]
    e = log_normal.expand([2])
    assert e.batch_shape == (2,) and len(e.transforms) == 2
    assert torch.equal(e.log_prob(torch.ones(2)), log_normal.log_prob(torch.ones(2)).expand(2))


def test_marks_under_inference_mode_are_not_trusted():
    x = torch.tensor([0.5, 2.0])
    with torch.inference_mode():
        expected = td.Normal(0.0, 1.0).log_prob(x)
        assert torch.equal(dist.Normal(0.0, 1.0).log_prob(x), expected)
        d = dist.LogNormal(0.0, 1.0).expand([2])
        assert torch.equal(d.log_prob(x), td.LogNormal(0.0, 1.0).expand([2]).log_prob(x))
    assert torch.equal(dist.Normal(0.0, 1.0).expand([2]).log_prob(x), expected)
