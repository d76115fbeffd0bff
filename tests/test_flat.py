"""Flat parameter vectors: round trips, gradients and Hessians through unravel, modules run from
a vector, and models whose ``param`` statements read a vector (Laplace, L-BFGS to the MAP)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import parameters_to_vector

import miniprob as pyro
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.distributions import constraints
from miniprob.flat import FlatView, ParamVector, ravel
from miniprob.infer import Trace_ELBO

F64 = torch.float64
LBFGS_OPTIONS = dict(
    max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
)
# torch.func.hessian loads torch's forward-AD decompositions, which use torch.jit.script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)


# ---- ravel ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(shapes, min_size=0, max_size=5),
    st.sampled_from([torch.float32, F64]),
    st.integers(1, 3),
)
def test_ravel_round_trips_any_shapes(shape_list, dtype, batch):
    named = {f"t{i}": torch.randn(shape, dtype=dtype) for i, shape in enumerate(shape_list)}
    vector, unravel = ravel(named)
    assert vector.dim() == 1 and vector.is_leaf and vector.requires_grad
    assert vector.numel() == sum(t.numel() for t in named.values())
    back = unravel(vector)
    assert list(back) == list(named)
    for name, t in named.items():
        assert back[name].shape == t.shape and back[name].dtype == dtype
        assert torch.equal(back[name], t)
    rows = torch.randn(batch, vector.numel(), dtype=dtype)
    batched = unravel(rows)
    for name, t in named.items():
        assert batched[name].shape == (batch, *t.shape)
        for b in range(batch):
            assert torch.equal(batched[name][b], unravel(rows[b])[name])


def test_ravel_takes_pairs_and_copies_its_inputs():
    w = torch.nn.Parameter(torch.ones(2))
    vector, unravel = ravel([("w", w), ("s", torch.tensor(3.0))])
    assert vector.tolist() == [1.0, 1.0, 3.0]
    with torch.no_grad():
        vector.zero_()
    assert w.tolist() == [1.0, 1.0]


def test_unravel_gives_views_of_the_vector():
    vector, unravel = ravel({"a": torch.zeros(2, 2), "b": torch.zeros(3)})
    parts = unravel(vector)
    storage = vector.untyped_storage().data_ptr()
    assert all(t.untyped_storage().data_ptr() == storage for t in parts.values())


def test_mixed_dtypes_share_the_promoted_one_and_come_back_in_their_own():
    vector, unravel = ravel(
        {"a": torch.ones(2, dtype=torch.float32), "b": torch.ones(1, dtype=F64)}
    )
    assert vector.dtype == F64
    back = unravel(vector)
    assert back["a"].dtype == torch.float32 and back["b"].dtype == F64


def test_ravel_of_nothing_is_an_empty_vector():
    vector, unravel = ravel({})
    assert vector.shape == (0,) and unravel(vector) == {}


def test_ravel_errors_name_the_tensor():
    with pytest.raises(TypeError, match="'n' should be a floating-point tensor, got torch.int64"):
        ravel({"n": torch.tensor([1, 2])})
    with pytest.raises(TypeError, match="'x' should be a floating-point tensor, got list"):
        ravel({"x": [1.0]})
    with pytest.raises(TypeError, match=r"expected \(name, tensor\) pairs"):
        ravel([torch.zeros(2)])
    with pytest.raises(ValueError, match="duplicate names"):
        ravel([("a", torch.zeros(1)), ("a", torch.zeros(1))])
    _, unravel = ravel({"a": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(\.\.\., 3\), got \(4,\)"):
        unravel(torch.zeros(4))


# ---- gradients and Hessians -------------------------------------------------------------------


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def test_parameters_to_vector_breaks_the_graph_and_ravel_does_not():
    net = small_net()
    x = torch.randn(8, 3)
    loss = net(x).pow(2).mean()
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.autograd.grad(loss, parameters_to_vector(net.parameters()))
    flat = FlatView(net)
    (grad,) = torch.autograd.grad(flat.view(x).pow(2).mean(), flat.vector)
    assert grad.shape == flat.vector.shape


def test_gradient_through_unravel_equals_backward_on_the_parameters():
    net = small_net()
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    torch.nn.functional.mse_loss(net(x), y).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    flat = FlatView(net)
    (grad,) = torch.autograd.grad(torch.nn.functional.mse_loss(flat.view(x), y), flat.vector)
    assert torch.allclose(grad, expected, atol=1e-7)


def test_hessian_of_a_quadratic_through_unravel_is_its_matrix():
    torch.manual_seed(0)
    m = torch.randn(6, 6, dtype=F64)
    a, b = m @ m.T + torch.eye(6, dtype=F64), torch.randn(6, dtype=F64)
    vector, unravel = ravel({"u": torch.zeros(2, dtype=F64), "w": torch.zeros(2, 2, dtype=F64)})

    def quadratic(v):
        parts = unravel(v)
        z = torch.cat([parts["u"], parts["w"].reshape(-1)])
        return 0.5 * z @ a @ z + b @ z

    point = torch.randn(6, dtype=F64)
    assert torch.allclose(torch.func.hessian(quadratic)(point), a)
    assert torch.allclose(torch.func.grad(quadratic)(point), a @ point + b)


# ---- FlatView ---------------------------------------------------------------------------------


def test_flat_view_runs_the_module_from_any_vector_and_writes_back():
    net = small_net()
    x = torch.randn(5, 3)
    flat = FlatView(net)
    assert torch.equal(flat.view(x), net(x))
    other = torch.randn_like(flat.vector)
    expected = torch.func.functional_call(net, flat.unravel(other), (x,))
    assert torch.equal(flat.view(x, vector=other), expected)
    with torch.no_grad():
        flat.vector.copy_(other)
    flat.write_back()
    assert torch.equal(parameters_to_vector(net.parameters()), other)
    assert torch.equal(net(x), expected)


def test_flat_view_under_vmap_equals_a_loop():
    flat = FlatView(small_net())
    x = torch.randn(5, 3)
    vectors = torch.randn(4, flat.vector.numel())
    batched = torch.vmap(lambda v: flat.view(x, vector=v))(vectors)
    looped = torch.stack([flat.view(x, vector=v) for v in vectors])
    assert torch.allclose(batched, looped, atol=1e-6)


def test_flat_view_trains_with_lbfgs_to_least_squares():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1).double()
    x = torch.randn(40, 3, dtype=F64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=F64) + 0.3
    flat = FlatView(net)
    opt = torch.optim.LBFGS([flat.vector], **LBFGS_OPTIONS)

    def closure():
        opt.zero_grad()
        loss = (flat.view(x) - y).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    flat.write_back()
    assert torch.allclose(net.weight, torch.tensor([[1.0, -2.0, 0.5]], dtype=F64), atol=1e-6)
    assert net.bias.item() == pytest.approx(0.3, abs=1e-6)


def test_flat_view_refuses_a_non_module():
    with pytest.raises(TypeError, match="'module' should be an nn.Module, got function"):
        FlatView(lambda x: x)


# ---- ParamVector: models as functions of one vector -------------------------------------------

N, D, NOISE, PRIOR = 30, 3, 0.5, 2.0


def regression_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=F64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=F64) + NOISE * torch.randn(
        N, generator=g, dtype=F64
    )
    return x, y


def linear_gaussian(x, y):
    """Bayesian linear regression, weights as a param: its log joint is a quadratic in w."""
    w = pyro.param("w", torch.zeros(D, dtype=F64))
    pyro.factor("prior", dist.Normal(0.0, PRIOR).log_prob(w).sum())
    with pyro.plate("data", N):
        pyro.sample("y", dist.Normal(x @ w, NOISE), obs=y)


def negative_log_joint(x, y):
    return -poutine.trace(linear_gaussian).get_trace(x, y).log_prob_sum()


def exact_posterior(x, y):
    precision = x.T @ x / NOISE**2 + torch.eye(D, dtype=F64) / PRIOR**2
    covariance = torch.linalg.inv(precision)
    return covariance @ x.T @ y / NOISE**2, covariance


def lbfgs(params, loss_fn, *args):
    opt = torch.optim.LBFGS([params.vector], **LBFGS_OPTIONS)

    def closure():
        opt.zero_grad()
        loss = loss_fn(params.vector, *args)
        loss.backward()
        return loss

    opt.step(closure)


def test_laplace_approximation_of_a_linear_gaussian_model_is_exact():
    x, y = regression_data()
    linear_gaussian(x, y)
    params = ParamVector()
    loss = params.as_function(negative_log_joint)
    lbfgs(params, loss, x, y)
    mean, covariance = exact_posterior(x, y)
    assert torch.allclose(params.vector, mean, atol=1e-8)
    hessian = torch.func.hessian(loss)(params.vector.detach(), x, y)
    assert torch.allclose(torch.linalg.inv(hessian), covariance, atol=1e-10)
    params.write_back()
    assert torch.allclose(pyro.param("w"), mean, atol=1e-8)


def test_lbfgs_on_constrained_params_reaches_the_closed_form_map():
    data = regression_data()[1]

    def model():
        loc = pyro.param("loc", torch.tensor(0.0, dtype=F64))
        scale = pyro.param("scale", torch.tensor(1.0, dtype=F64), constraint=constraints.positive)
        with pyro.plate("data", N):
            pyro.sample("obs", dist.Normal(loc, scale), obs=data)

    model()
    params = ParamVector()
    assert params.names == ["loc", "scale"]
    loss = params.as_function(lambda: -poutine.trace(model).get_trace().log_prob_sum())
    lbfgs(params, loss)
    fitted = params.constrained()
    assert fitted["loc"].item() == pytest.approx(data.mean().item(), abs=1e-8)
    assert fitted["scale"].item() == pytest.approx(data.std(unbiased=False).item(), abs=1e-8)
    params.write_back()
    assert pyro.param("scale").item() == pytest.approx(fitted["scale"].item(), abs=1e-12)


def test_constrained_values_and_write_back_match_the_store():
    pyro.param("a", torch.tensor([1.0, 2.0]))
    pyro.param("s", torch.tensor(3.0), constraint=constraints.positive)
    pyro.param("p", torch.tensor([0.2, 0.3, 0.5]), constraint=constraints.simplex)
    params = ParamVector()
    assert params.vector.numel() == 2 + 1 + 3  # softmax: as many as the simplex
    for name, value in params.constrained().items():
        assert torch.allclose(value, pyro.param(name))
    leaf = pyro.get_param_store().unconstrained("s")
    new = torch.randn(6)
    params.write_back(new)
    assert pyro.get_param_store().unconstrained("s") is leaf
    assert torch.allclose(
        torch.cat([pyro.get_param_store().unconstrained(n).reshape(-1) for n in params.names]), new
    )


def test_substitute_feeds_param_statements_and_leaves_others_to_the_store():
    pyro.param("a", torch.tensor(1.0))
    pyro.param("b", torch.tensor(2.0))
    params = ParamVector(names=["b"])

    def fn():
        return pyro.param("a") + pyro.param("b")

    with params.substitute(torch.tensor([10.0])):
        assert fn().item() == 11.0
    assert params.substitute(torch.tensor([20.0]))(fn)().item() == 21.0
    assert fn().item() == 3.0


def test_elbo_gradient_as_a_function_of_one_vector_equals_backward():
    data = torch.tensor([0.5, 1.5, 2.0])

    def model():
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 3):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    def guide():
        loc = pyro.param("loc", torch.tensor(0.3))
        scale = pyro.param("scale", torch.tensor(0.7), constraint=constraints.positive)
        pyro.sample("mu", dist.Normal(loc, scale))

    elbo = Trace_ELBO()
    pyro.set_rng_seed(3)
    elbo.differentiable_loss(model, guide).backward()
    store = pyro.get_param_store()
    expected = torch.cat([store.unconstrained(n).grad.reshape(-1) for n in ("loc", "scale")])
    params = ParamVector()
    loss = params.as_function(elbo.differentiable_loss)
    pyro.set_rng_seed(3)
    (grad,) = torch.autograd.grad(loss(params.vector, model, guide), params.vector)
    assert torch.allclose(grad, expected, atol=1e-6)


def test_negative_log_joint_under_vmap_equals_a_loop():
    x, y = regression_data()
    linear_gaussian(x, y)
    params = ParamVector()
    loss = params.as_function(negative_log_joint)
    vectors = torch.randn(4, D, dtype=F64)
    batched = torch.vmap(loss, in_dims=(0, None, None))(vectors, x, y)
    looped = torch.stack([loss(v, x, y) for v in vectors])
    assert torch.allclose(batched, looped)


def test_param_vector_errors():
    with pytest.raises(ValueError, match="no parameters to include"):
        ParamVector()
    pyro.param("a", torch.tensor(1.0))
    with pytest.raises(KeyError, match=r"params \['zz'\] are not in the param store"):
        ParamVector(names=["a", "zz"])


def test_module_parameters_are_left_out_and_refused_by_name():
    """A network computes with its own nn.Parameters: a substituted value cannot reach it."""
    net = torch.nn.Linear(2, 1)
    pyro.module("net", net)
    pyro.param("a", torch.tensor([1.0, 2.0]))
    assert ParamVector().names == ["a"]
    with pytest.raises(ValueError, match=r"net\$\$\$weight.*pyro.module"):
        ParamVector(names=["a", "net$$$weight"])


def test_a_write_back_that_fails_changes_nothing():
    pyro.param("a", torch.zeros(2))
    pyro.param("b", torch.zeros(2))
    params = ParamVector()
    pyro.get_param_store()["b"] = torch.zeros(3)  # the model ran again with another size
    with pytest.raises(ValueError, match="'b' now has shape"):
        params.write_back(torch.ones(4))
    assert pyro.param("a").tolist() == [0.0, 0.0]


def test_param_vector_of_another_store():
    store = pyro.ParamStore()
    store.setdefault("z", torch.tensor([1.0, 2.0]))
    params = ParamVector(store=store)
    assert params.vector.tolist() == [1.0, 2.0]
    assert "z" not in pyro.get_param_store()
