"""miniprob's lean Adam update gives bitwise the parameters and state of ``torch.optim.Adam``."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch

import miniprob as pyro
from miniprob.optim import Adam
from miniprob.optim.adam_update import FOREACH_MIN_PARAMS, adam_step

SHAPES = {
    "one scalar": [()],
    "loop": [(10,), (3, 4)],
    "foreach": [(128, 64), (128,), (10, 128), (10,), (3,), (), (5, 5)],
}
OPTIONS = [
    {},
    {"weight_decay": 0.1},
    {"amsgrad": True},
    {"maximize": True},
    {"maximize": True, "weight_decay": 0.1},
    {"foreach": True},
    {"betas": (0.5, 0.9), "eps": 1e-3, "lr": 0.3},
]


def _pair(shapes, **options):
    a = [torch.randn(s).requires_grad_() for s in shapes]
    b = [x.detach().clone().requires_grad_() for x in a]
    kw = {"lr": 0.01, **options}
    return a, b, torch.optim.Adam(a, **kw), torch.optim.Adam(b, **kw)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("shapes", SHAPES.values(), ids=SHAPES.keys())
def test_same_parameters_and_state_as_torch_adam(shapes, options):
    torch.manual_seed(0)
    a, b, opt_a, opt_b = _pair(shapes, **options)
    fast_steps = 0
    for i in range(30):
        for x, y in zip(a, b, strict=True):
            g = torch.randn(x.shape)
            x.grad, y.grad = g.clone(), g.clone()
        if i == 5:  # a parameter without a gradient is left alone by both
            a[0].grad = b[0].grad = None
        opt_a.step()
        if adam_step(opt_b):
            fast_steps += 1
        else:
            opt_b.step()
    assert fast_steps == 29  # all but the first, which creates the state
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
        for key, value in opt_a.state[x].items():
            assert torch.equal(value, opt_b.state[y][key]), key
    assert opt_a.state_dict()["param_groups"] == opt_b.state_dict()["param_groups"]


def _ready(**options):
    p = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([p], **options)
    p.grad = torch.ones(3)
    opt.step()
    p.grad = torch.ones(3)
    return p, opt


@pytest.mark.parametrize(
    "options",
    [
        {"fused": True},
        {"decoupled_weight_decay": True, "weight_decay": 0.1},
        {"lr": torch.tensor(0.01)},
    ],
    ids=str,
)
def test_options_it_does_not_reproduce_are_left_to_torch(options):
    p, opt = _ready(**options)
    before = p.detach().clone()
    assert adam_step(opt) is False
    assert torch.equal(p, before)


def test_first_update_hooks_and_other_optimizers_are_left_to_torch():
    p = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([p])
    p.grad = torch.ones(3)
    assert adam_step(opt) is False  # no state yet
    p, opt = _ready()
    handle = opt.register_step_pre_hook(lambda *a: None)
    assert adam_step(opt) is False
    handle.remove()
    assert adam_step(opt) is True
    opt.state[p]["step"] = 1.0  # a hand-made state: torch's own loop would not count it
    assert adam_step(opt) is False
    q = torch.zeros(3, requires_grad=True)
    sgd = torch.optim.SGD([q], lr=0.1)
    q.grad = torch.ones(3)
    sgd.step()
    assert adam_step(sgd) is False


def test_pyro_adam_still_runs_lr_schedulers_and_checkpoints_in_torch_format():
    pyro.clear_param_store()
    sched = pyro.optim.ExponentialLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.1}, "gamma": 0.5}
    )
    names = [f"w{i}" for i in range(FOREACH_MIN_PARAMS)]
    for _ in range(3):
        loss = sum((pyro.param(n, torch.tensor(1.0)) ** 2) for n in names)
        loss.backward()
        sched([pyro.param(n).unconstrained() for n in names])
        sched.step()
    state = sched.get_state()["w0"]
    assert state["state"][0]["step"].item() == 3
    assert state["param_groups"][0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_miniprob_adam_equals_torch_adam_over_svi_like_steps():
    pyro.clear_param_store()
    torch.manual_seed(1)
    ours = Adam({"lr": 0.05})
    ref = torch.zeros(2, requires_grad=True)
    ref_opt = torch.optim.Adam([ref], lr=0.05)
    target = torch.tensor([1.0, -2.0])
    for _ in range(20):
        w = pyro.param("w", torch.zeros(2))
        ((w - target) ** 2).sum().backward()
        ours([w.unconstrained()])
        w.unconstrained().grad = None
        ((ref - target) ** 2).sum().backward()
        ref_opt.step()
        ref_opt.zero_grad()
    assert torch.equal(pyro.param("w").detach(), ref.detach())


# ---- the flat update: a whole group's state in flat buffers ------------------------------
FLAT_SHAPES = [(), (1,), (3,), (17,), (50,), (33, 7), (2, 3, 5), (0,), (128, 64)]
FLAT_OPTIONS = [o for o in OPTIONS if not o.get("amsgrad") and not o.get("foreach")]


def _flat_pair(dtype=torch.float32, **options):
    a = [torch.randn(s, dtype=dtype).requires_grad_() for s in FLAT_SHAPES]
    # a non-contiguous parameter (a transposed weight) and its gradient
    a.append(torch.randn(7, 4, dtype=dtype).t().requires_grad_())
    b = [x.detach().clone().requires_grad_() for x in a]
    kw = {"lr": 0.01, **options}
    return a, b, torch.optim.Adam(a, **kw), torch.optim.Adam(b, **kw)


def _grads(a, b, scale=1.0):
    for x, y in zip(a, b, strict=True):
        g = torch.randn(x.shape, dtype=x.dtype) * scale
        if x.dim() == 2 and not x.is_contiguous():
            g = g.t().contiguous().t()
        x.grad, y.grad = g.clone(), g.clone()


def _steps(a, b, opt_a, opt_b, n):
    """``n`` steps of torch's Adam and of ``adam_step`` (torch's where it does not apply)."""
    for _ in range(n):
        _grads(a, b)
        opt_a.step()
        if not adam_step(opt_b):
            opt_b.step()


def _assert_same(a, b, opt_a, opt_b):
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
        assert opt_a.state[x].keys() == opt_b.state[y].keys()
        for key, value in opt_a.state[x].items():
            other = opt_b.state[y][key]
            assert value.shape == other.shape and value.dtype == other.dtype, key
            assert torch.equal(value, other), key


@pytest.mark.parametrize("options", FLAT_OPTIONS, ids=str)
def test_flat_update_equals_torch_adam_bitwise(options):
    torch.manual_seed(0)
    a, b, opt_a, opt_b = _flat_pair(**options)
    for i in range(40):
        _grads(a, b, scale=10.0 ** (i % 7 - 3))  # tiny to large gradients
        opt_a.step()
        if not adam_step(opt_b):
            opt_b.step()
        if i >= 1:
            assert opt_b._miniprob_flat, "the flat update should be in use"
    _assert_same(a, b, opt_a, opt_b)
    assert opt_a.state_dict()["param_groups"] == opt_b.state_dict()["param_groups"]
    # the state reads as torch's: one tensor per parameter, its shape, a 0-dim step count
    state = opt_b.state_dict()["state"]
    assert all(s["step"].dim() == 0 and s["step"].item() == 40 for s in state.values())


def test_flat_update_follows_loaded_state_missing_gradients_and_new_parameters():
    torch.manual_seed(1)
    a, b, opt_a, opt_b = _flat_pair()

    def step():
        opt_a.step()
        if not adam_step(opt_b):
            opt_b.step()

    for i in range(30):
        _grads(a, b)
        if i == 10:  # load a state saved earlier into both (replaces the flat buffers' views)
            saved = copy.deepcopy(opt_a.state_dict())
        if i == 15:
            opt_a.load_state_dict(copy.deepcopy(saved))
            opt_b.load_state_dict(copy.deepcopy(saved))
        if i in (20, 21):  # a parameter without a gradient: step counts part ways
            a[3].grad = b[3].grad = None
        if i == 25:  # state written into by hand, as torch allows
            for opt, x in ((opt_a, a[1]), (opt_b, b[1])):
                opt.state[x]["exp_avg"] = torch.full_like(x, 0.5)
        step()
    _assert_same(a, b, opt_a, opt_b)
    # step counts that agree again let the group go flat again; a new parameter joins later
    for opt, params in ((opt_a, a), (opt_b, b)):
        for x in params:
            opt.state[x]["step"] = torch.tensor(7.0)
    x_new, y_new = torch.randn(4).requires_grad_(), None
    y_new = x_new.detach().clone().requires_grad_()
    opt_a.add_param_group({"params": [x_new]})
    opt_b.add_param_group({"params": [y_new]})
    a.append(x_new)
    b.append(y_new)
    _steps(a, b, opt_a, opt_b, 5)
    assert opt_b._miniprob_flat
    _assert_same(a, b, opt_a, opt_b)


def test_mixed_dtypes_and_amsgrad_update_tensor_by_tensor():
    torch.manual_seed(2)
    for make in (
        lambda: _flat_pair(amsgrad=True),
        lambda: _mixed_dtype_pair(),
    ):
        a, b, opt_a, opt_b = make()
        _steps(a, b, opt_a, opt_b, 5)
        assert not opt_b._miniprob_flat
        _assert_same(a, b, opt_a, opt_b)


def _mixed_dtype_pair():
    a = [torch.randn(3).requires_grad_(), torch.randn(2, dtype=torch.float64).requires_grad_()]
    b = [x.detach().clone().requires_grad_() for x in a]
    return a, b, torch.optim.Adam(a, lr=0.01), torch.optim.Adam(b, lr=0.01)


def test_flat_state_survives_pickling_and_deepcopy_as_torch_state():
    torch.manual_seed(3)
    a, b, opt_a, opt_b = _flat_pair()
    _steps(a, b, opt_a, opt_b, 3)
    clone = copy.deepcopy(opt_b)
    assert not getattr(clone, "_miniprob_flat", None)
    buffer = io.BytesIO()
    torch.save(opt_b.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    for i, x in enumerate(a):
        for key, value in opt_a.state[x].items():
            assert torch.equal(loaded["state"][i][key], value)


def test_step_counts_changed_behind_the_flat_update_are_noticed():
    """torch's own step() (as with a closure through miniprob's Adam, or with hooks) or a hand
    edit moves the step counts in place; the flat update must not go on with its own count."""
    pyro.clear_param_store()
    ours = Adam({"lr": 0.1})
    ref = [torch.tensor(1.0, requires_grad=True), torch.tensor(2.0, requires_grad=True)]
    ref_opt = torch.optim.Adam(ref, lr=0.1)
    for i in range(6):
        ws = [pyro.param("a", torch.tensor(1.0)), pyro.param("b", torch.tensor(2.0))]
        sum(w**2 for w in ws).backward()
        leaves = [w.unconstrained() for w in ws]
        if i == 3:
            ours(leaves, closure=None)  # arguments: torch's step() runs
        else:
            ours(leaves)
        for leaf in leaves:
            leaf.grad = None
        sum(r**2 for r in ref).backward()
        ref_opt.step()
        ref_opt.zero_grad()
    assert [pyro.param(n).item() for n in "ab"] == [r.item() for r in ref]

    torch.manual_seed(4)
    a, b, opt_a, opt_b = _flat_pair()
    _steps(a, b, opt_a, opt_b, 3)
    for opt, params in ((opt_a, a), (opt_b, b)):
        opt.state[params[2]]["step"].fill_(10.0)
    _steps(a, b, opt_a, opt_b, 3)
    _assert_same(a, b, opt_a, opt_b)


@pytest.mark.parametrize(
    "case", ["beta1 zero", "amsgrad switched on", "shared memory", "int steps", "float16"]
)
def test_cases_the_flat_update_leaves_to_the_per_tensor_update(case):
    torch.manual_seed(5)
    if case == "shared memory":
        base_a = torch.randn(4, requires_grad=True)
        base_b = base_a.detach().clone().requires_grad_()
        a = [base_a[:3].detach().requires_grad_(), base_a[1:].detach().requires_grad_()]
        b = [base_b[:3].detach().requires_grad_(), base_b[1:].detach().requires_grad_()]
        opt_a, opt_b = torch.optim.Adam(a, lr=0.1), torch.optim.Adam(b, lr=0.1)
    else:
        options = {"betas": (0.0, 0.99)} if case == "beta1 zero" else {}
        dtype = torch.float16 if case == "float16" else torch.float32
        a, b, opt_a, opt_b = _flat_pair(dtype=dtype, **options)
    _steps(a, b, opt_a, opt_b, 3)
    if case == "amsgrad switched on":
        for opt, params in ((opt_a, a), (opt_b, b)):
            opt.param_groups[0]["amsgrad"] = True
            for x in params:
                opt.state[x]["max_exp_avg_sq"] = torch.zeros_like(x)
    if case == "int steps":
        for opt, params in ((opt_a, a), (opt_b, b)):
            for x in params:
                opt.state[x]["step"] = torch.tensor(3)
    _steps(a, b, opt_a, opt_b, 4)
    if case != "int steps":
        assert not opt_b._miniprob_flat
    _assert_same(a, b, opt_a, opt_b)


def test_lr_scheduler_sees_the_update_as_an_optimizer_step():
    p = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.1)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.5)
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    opt._opt_called = False  # as after a scheduler is restored for a resumed optimizer
    p.grad = torch.ones(3)
    assert adam_step(opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
