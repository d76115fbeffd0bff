"""black_box: finite-difference gradients checked against analytic and autograd twins."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miniprob.blackbox import black_box

F64 = torch.float64


def leaf(*values, dtype=F64):
    return torch.tensor(values, dtype=dtype, requires_grad=True)


class Recorder:
    """A NumPy function that records the (copied) arguments of every call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args):
        self.calls.append([a.clone() if torch.is_tensor(a) else a for a in args])
        return self.fn(*args)


def np_sin(x):
    return np.sin(x.numpy())


def np_cubic(x):
    x = x.numpy()
    return x**3 - 2 * x**2 + 0.5 * x


def np_quadratic_sum(x):
    return (x.numpy() ** 2).sum(-1)


# gradcheck


def test_central_passes_gradcheck_with_default_tolerances():
    fn = black_box(lambda x, y, scale: scale * np.exp(x.numpy()) * np.cos(y.numpy()))
    x = torch.randn(3, dtype=F64, requires_grad=True)
    y = torch.randn(3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x, y, 0.7))


def test_forward_passes_gradcheck_with_looser_tolerance():
    fn = black_box(np_cubic, method="forward")
    x = torch.randn(4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,), atol=1e-6, rtol=1e-5)


# accuracy per method


@pytest.mark.parametrize(
    ("fn", "derivative"),
    [(np_sin, torch.cos), (np_cubic, lambda x: 3 * x**2 - 4 * x + 0.5)],
)
def test_central_is_much_more_accurate_than_forward(fn, derivative):
    x = torch.linspace(-3.0, 3.0, 13, dtype=F64)
    errors = {}
    for method, tolerance in [("forward", 1e-6), ("central", 1e-9)]:
        leaf_x = x.clone().requires_grad_()
        black_box(fn, method=method)(leaf_x).sum().backward()
        errors[method] = (leaf_x.grad - derivative(x)).abs().max().item()
        assert errors[method] < tolerance, method
    assert errors["central"] < errors["forward"] / 100


@pytest.mark.parametrize(("method", "tolerance"), [("forward", 1e-6), ("central", 1e-9)])
def test_numpy_function_of_two_inputs(method, tolerance):
    fn = black_box(lambda a, b: np.exp(a.numpy()) * np.cos(b.numpy()), method=method)
    a, b = leaf(0.3, -1.2, 0.8), leaf(2.0, 0.1, -0.4)
    v = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    grad_a, grad_b = torch.autograd.grad(fn(a, b), (a, b), v)
    a, b = a.detach(), b.detach()
    assert torch.allclose(grad_a, v * a.exp() * b.cos(), atol=tolerance, rtol=0)
    assert torch.allclose(grad_b, -v * a.exp() * b.sin(), atol=tolerance, rtol=0)


def test_spsa_of_a_scalar_linear_function_is_exact():
    x = leaf(0.4)
    black_box(lambda x: 3.0 * x.numpy() - 1.0, method="spsa")(x).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([3.0], dtype=F64), atol=1e-9, rtol=0)


def test_spsa_of_a_linear_function_is_the_rademacher_estimate():
    a = np.array([1.0, -2.0, 0.5, 3.0])
    fn = Recorder(lambda x: x.numpy() @ a)
    x = leaf(0.5, -4.0, 2.0, 0.1)
    torch.manual_seed(0)
    black_box(fn, method="spsa", num_directions=5)(x).backward()
    # looped spsa calls fn at the forward point, then x + h * u for each u, then x - h * u
    base = fn.calls[0][0]
    plus = torch.stack([call[0] for call in fn.calls[1:6]])
    h, directions = (plus - base).abs(), torch.sign(plus - base)
    slopes = (directions * h) @ torch.from_numpy(a)
    expected = (slopes @ directions) / (5 * h[0])
    assert torch.allclose(x.grad, expected, rtol=1e-6, atol=0)
    assert not torch.allclose(x.grad, torch.from_numpy(a), atol=1e-3)


def test_spsa_is_unbiased_over_many_directions():
    a = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0], dtype=F64)
    fn = black_box(lambda x: x @ a, method="spsa", num_directions=4000, vectorized=True)
    x = torch.rand(5, dtype=F64).requires_grad_()
    torch.manual_seed(1)
    fn(x).backward()
    assert torch.allclose(x.grad, a, atol=0.3, rtol=0)


def test_spsa_on_a_quadratic_within_loose_tolerance():
    matrix = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]], dtype=F64)

    def quadratic(x):
        return 0.5 * ((x @ matrix) * x).sum(-1)

    fn = black_box(quadratic, method="spsa", num_directions=3000, vectorized=True)
    x = torch.tensor([0.2, -0.7, 0.9], dtype=F64, requires_grad=True)
    torch.manual_seed(2)
    fn(x).backward()
    assert torch.allclose(x.grad, matrix @ x.detach(), atol=0.2, rtol=0)


# vectorized mode and call counts


@pytest.mark.parametrize(
    ("method", "looped_calls", "batch"),
    [("forward", 6 + 1, 6), ("central", 2 * 6 + 1, 12), ("spsa", 2 * 8 + 1, 16)],
)
def test_vectorized_equals_looped_with_exact_call_counts(method, looped_calls, batch):
    def matrix_fn(x, y):
        return np.tanh(x.numpy() @ y.numpy())

    x = torch.randn(2, 3, dtype=F64)
    y = torch.randn(3, 2, dtype=F64)
    grads = {}
    for vectorized in (False, True):
        fn = Recorder(matrix_fn)
        xs = (x.clone().requires_grad_(), y.clone())
        torch.manual_seed(3)
        black_box(fn, method=method, vectorized=vectorized)(*xs).sum().backward()
        grads[vectorized] = xs[0].grad
        if vectorized:
            assert [call[0].shape for call in fn.calls] == [(1, 2, 3), (batch, 2, 3)]
            assert [call[1].shape for call in fn.calls] == [(1, 3, 2), (batch, 3, 2)]
        else:
            assert len(fn.calls) == looped_calls
    assert torch.allclose(grads[True], grads[False], rtol=1e-10, atol=1e-12)


def test_inputs_that_do_not_require_grad_are_never_perturbed():
    fn = Recorder(lambda x, y, label: x.numpy().sum() * y.numpy())
    x, y = leaf(1.0, 2.0, 3.0), torch.tensor([4.0, 5.0], dtype=F64)
    black_box(fn)(x, y, "tag").sum().backward()
    assert len(fn.calls) == 2 * 3 + 1
    assert all(torch.equal(call[1], y) and call[2] == "tag" for call in fn.calls)
    assert torch.allclose(x.grad, torch.full((3,), 9.0, dtype=F64))


def test_gradient_reaches_an_upstream_linear_layer():
    torch.manual_seed(4)
    encoder = torch.nn.Linear(3, 2, dtype=F64)
    weights = np.array([1.5, -0.5])
    data = torch.randn(5, 3, dtype=F64)
    head = black_box(lambda z: np.tanh(z.numpy()) @ weights)
    head(encoder(data)).pow(2).sum().backward()
    grad = encoder.weight.grad.clone()
    encoder.zero_grad()
    (torch.tanh(encoder(data)) @ torch.from_numpy(weights)).pow(2).sum().backward()
    assert torch.allclose(grad, encoder.weight.grad, rtol=1e-8, atol=1e-10)


# shapes, dtypes and arguments


@pytest.mark.parametrize(
    ("fn", "twin", "shape"),
    [
        (lambda x: float(np.sum(x.numpy() ** 3)), lambda x: (x**3).sum(), ()),
        (lambda x: np.cumsum(np.sin(x.numpy())), lambda x: torch.sin(x).cumsum(0), (3,)),
        (lambda x: np.outer(x.numpy(), x.numpy()), lambda x: torch.outer(x, x), (3, 3)),
    ],
)
def test_outputs_of_any_shape(fn, twin, shape):
    x = leaf(0.5, -1.0, 2.0)
    out = black_box(fn)(x)
    assert out.shape == shape and out.dtype == F64
    v = torch.randn(shape, dtype=F64)
    (grad,) = torch.autograd.grad(out, x, v)
    (expected,) = torch.autograd.grad(twin(x), x, v)
    assert torch.allclose(grad, expected, atol=1e-8, rtol=0)


def test_non_tensor_arguments_pass_through_unchanged():
    fn = black_box(lambda x, expr: eval(expr, {"np": np, "x": x.numpy()}))
    x = leaf(0.1, 0.2)
    fn(x, "np.sum(np.exp(x))").backward()
    assert torch.allclose(x.grad, x.detach().exp(), atol=1e-8, rtol=0)


def test_output_dtype_follows_the_floating_inputs():
    fn = black_box(lambda x, n: x.numpy() * n.numpy())
    out = fn(torch.ones(2, dtype=torch.float16), torch.tensor([1, 2]))
    assert out.dtype == torch.float16
    assert black_box(lambda n: n.numpy() * 2)(torch.tensor([1, 2])).dtype == torch.float32


def test_float32_inputs_warn_and_get_float32_gradients():
    x = torch.tensor([0.5, 1.5], requires_grad=True)
    with pytest.warns(UserWarning, match=r"argument 0 \('x'\).*float64 and cast back"):
        out = black_box(np_sin)(x)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == torch.float32
    assert torch.allclose(x.grad, torch.cos(x.detach()), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        black_box(np_sin)(leaf(0.5))


def test_decorator_forms():
    @black_box
    def plain(x):
        return np.sin(x.numpy())

    @black_box(method="forward", step=1e-7)
    def configured(x):
        return np.sin(x.numpy())

    assert plain.__name__ == "plain"
    for fn, tolerance in [(plain, 1e-9), (configured, 1e-6)]:
        x = leaf(0.3, 1.1)
        fn(x).sum().backward()
        assert torch.allclose(x.grad, torch.cos(x.detach()), atol=tolerance, rtol=0)


def test_double_backward_is_refused():
    x = leaf(0.3)
    (grad,) = torch.autograd.grad(black_box(np_sin)(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


# errors


def test_shape_change_under_perturbation_names_the_argument():
    def jumpy(data, theta):
        return np.zeros(2 if theta.item() == 1.0 else 3)

    out = black_box(jumpy)(torch.zeros(2), leaf(1.0))
    with pytest.raises(ValueError, match=r"\(2,\) to \(3,\) when argument 1 \('theta'\)"):
        out.sum().backward()


def test_non_finite_output_names_the_argument_and_suggests_a_fix():
    def root(offset, x):
        with np.errstate(invalid="ignore"):
            return np.sqrt(x.numpy())

    x = leaf(0.0, 1.0)
    with pytest.raises(ValueError, match=r"argument 1 \('x'\).*smaller `step`.*method='forward'"):
        black_box(root)(0.0, x).sum().backward()
    black_box(root, method="forward")(0.0, x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_vectorized_errors_name_the_arguments():
    with pytest.raises(ValueError, match="leading batch dimension"):
        black_box(lambda x: np.sin(x.numpy()[0]), vectorized=True)(leaf(0.1, 0.2))

    def half_nan(x):
        return np.where(x.numpy() < 0.5, np.sin(x.numpy()), np.nan).sum(-1)

    out = black_box(half_nan, vectorized=True)(leaf(0.2, 0.5 - 1e-9))
    with pytest.raises(ValueError, match=r"argument 0 \('x'\)"):
        out.backward()

    out = black_box(lambda *xs: xs[1].numpy()[:1], vectorized=True)(torch.ones(1), leaf(1.0, 2.0))
    with pytest.raises(ValueError, match=r"perturbations of argument 1, got \(1, 2\)"):
        out.sum().backward()


def test_argument_errors():
    with pytest.raises(ValueError, match="method must be .* got 'backward'"):
        black_box(np_sin, method="backward")
    with pytest.raises(ValueError, match="step must be a positive"):
        black_box(np_sin, step=0.0)
    with pytest.raises(ValueError, match="num_directions only applies to method='spsa'"):
        black_box(np_sin, num_directions=4)
    with pytest.raises(ValueError, match="num_directions must be a positive int"):
        black_box(np_sin, method="spsa", num_directions=0)
    with pytest.raises(TypeError, match="fn must be callable"):
        black_box(3.0)
    fn = black_box(lambda x, w=1.0: x.numpy() * w)
    with pytest.raises(ValueError, match="keyword argument 'w' requires grad"):
        fn(leaf(1.0), w=leaf(2.0))
    with pytest.raises(ValueError, match=r"argument 0 \('x'\) requires grad but has dtype"):
        fn(torch.ones(2, dtype=torch.complex128, requires_grad=True))


# property


@settings(max_examples=25, deadline=None)
@given(
    coefficients=st.lists(st.floats(-2.0, 2.0), min_size=1, max_size=5),
    values=st.lists(st.floats(-1.5, 1.5), min_size=1, max_size=4),
)
def test_central_gradient_of_a_polynomial_matches_autograd(coefficients, values):
    def polynomial(x):
        return sum(c * x**k for k, c in enumerate(coefficients))

    x = torch.tensor(values, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(black_box(polynomial)(x).sum(), x)
    (expected,) = torch.autograd.grad(polynomial(x).sum(), x)
    assert torch.allclose(grad, expected, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("method", ["central", "forward", "spsa"])
def test_a_zero_dim_argument_gets_its_gradient(method):
    x = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y = black_box(lambda x: np.exp(x.numpy()), method=method)(x)
    (grad,) = torch.autograd.grad(y, x)
    assert grad.shape == () and grad.item() == pytest.approx(np.exp(0.7), rel=1e-4)
