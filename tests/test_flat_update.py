"""The compiled step's optimizer update over flat buffers (miniprob.optim.flat_update).

The parameters of one group move into one buffer (the same tensor objects, re-pointed), their
optimizer state into others, and the program's update is one elementwise pass whatever the
number of parameters. What moves them away again (a reloaded optimizer state, a ``.data``
assignment, an eager step that advances some step counts and not others) is followed: the
trajectory stays the eager one. Checked on the ``"aten"`` backend (the captured program, run
op by op), where eager and compiled steps agree value for value on a model without draws.
"""

import pytest
import torch

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.infer import SVI, Trace_ELBO
from miniprob.optim import Adam
from miniprob.optim.flat_update import FlatGroup, disjoint

DATA = torch.randn(30, 2, generator=torch.Generator().manual_seed(1)) * 2.0 + 1.0


def model(data, use_scale=True):
    loc = pyro.param("loc", torch.zeros(2))
    shift = pyro.param("shift", torch.zeros(()))
    scale = (
        pyro.param("scale", torch.ones(2), constraint=dist.constraints.positive)
        if use_scale
        else torch.ones(2)
    )
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc + shift, scale).to_event(1), obs=data)


def guide(data, use_scale=True):
    pass


def leaf(name):
    return pyro.get_param_store().unconstrained(name)


def run(compile, schedule, between=None):
    """Steps with ``use_scale`` from ``schedule``; ``between(svi, optim, i)`` after step i."""
    pyro.clear_param_store()
    optim = Adam({"lr": 0.05})
    svi = SVI(model, guide, optim, Trace_ELBO(), compile=compile)
    losses = []
    for i, use_scale in enumerate(schedule):
        losses.append(svi.step(DATA, use_scale=use_scale))
        if between is not None:
            between(svi, optim, i)
    store = pyro.get_param_store()
    return svi, losses, {k: store[k].detach().clone() for k in store.keys()}


def assert_same_run(compiled, eager):
    assert compiled[1] == pytest.approx(eager[1], rel=1e-5)
    for name, value in eager[2].items():
        torch.testing.assert_close(compiled[2][name], value, rtol=1e-5, atol=1e-6)


def test_a_group_moves_its_parameters_and_state_into_flat_buffers():
    svi, _, _ = run("aten", [True] * 3)
    loc, shift, scale = leaf("loc"), leaf("shift"), leaf("scale")
    (program,) = svi._compiled._programs.values()
    (group,) = program.groups
    parameters = group.inputs[0]
    assert parameters.shape == (5,)
    storage = parameters.untyped_storage().data_ptr()
    assert all(t.untyped_storage().data_ptr() == storage for t in (loc, shift, scale))
    assert loc.is_leaf and loc.requires_grad and shift.shape == ()
    state = svi.optim._owner[loc][1].state[loc]
    assert state["exp_avg"].untyped_storage().data_ptr() == group.inputs[1].data_ptr()
    assert float(state["step"]) == 3


def test_the_update_is_one_pass_whatever_the_number_of_parameters():
    svi, _, _ = run("aten", [True] * 2)
    (program,) = svi._compiled._programs.values()
    code = program.fn.code
    assert code.count("aten.lerp") == 1  # three parameters, one group
    assert code.count("aten.sqrt") == 2  # the second moment's, and the bias correction's


def test_compiled_steps_match_eager_while_state_and_parameters_are_replaced():
    def replace(svi, optim, i):
        if i == 3:  # a reloaded optimizer state: new tensors in the state dicts
            optim.set_state(optim.get_state())
        if i == 6:  # a parameter re-pointed by hand
            leaf("loc").data = leaf("loc").data.clone()

    eager = run(False, [True] * 10, replace)
    compiled = run("aten", [True] * 10, replace)
    assert_same_run(compiled, eager)
    assert len(compiled[0]._compiled.compile_seconds) == 1  # moved in again, not recompiled


def test_step_counts_that_come_apart_regroup_the_parameters():
    # Without `scale`, the eager step advances the step counts of `loc` and `shift` only: the
    # program of the first signature no longer holds parameters with one step count.
    schedule = [True, True, False, True, True, False, False, True]
    eager = run(False, schedule)
    compiled = run("aten", schedule)
    assert_same_run(compiled, eager)
    programs = list(compiled[0]._compiled._programs.values())
    assert all(p.fused for p in programs)
    groups = [sorted(p.names[i] for i in group.indices) for p in programs for group in p.groups]
    assert ["scale"] in groups  # its own step count now


def test_disjoint_refuses_tensors_that_share_memory():
    base = torch.zeros(6)
    assert disjoint([base[:3], base[3:], torch.ones(2)])
    assert not disjoint([base[:4], base[3:]])
    assert not disjoint([base.view(2, 3).t(), torch.ones(2)])  # not contiguous


def test_tied_parameters_are_stepped_outside_the_program():
    weight = torch.nn.Parameter(torch.zeros(4))

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = weight
            self.b = torch.nn.Parameter(weight.data[:2])  # shares a's memory

        def forward(self, x):
            return x * self.a[:2].sum() + self.b

    net = Tied()

    def tied_model(data):
        pyro.module("net", net)
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(net(torch.ones(2)), 1.0).to_event(1), obs=data)

    pyro.clear_param_store()
    svi = SVI(tied_model, lambda data: None, Adam({"lr": 0.05}), Trace_ELBO(), compile="aten")
    for _ in range(3):
        svi.step(DATA)
    (program,) = svi._compiled._programs.values()
    assert not program.fused and not program.groups
    assert net.b.data_ptr() == net.a.data_ptr()  # still tied


def test_flat_group_key_separates_rates_and_step_counts():
    a, b = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
    opt_a, opt_b = torch.optim.Adam([a], lr=0.1), torch.optim.Adam([b], lr=0.1)
    for p, opt in ((a, opt_a), (b, opt_b)):
        p.grad = torch.ones_like(p)
        opt.step()
    assert FlatGroup.key(opt_a, a) == FlatGroup.key(opt_b, b)
    b.grad = torch.ones_like(b)
    opt_b.step()
    assert FlatGroup.key(opt_a, a) != FlatGroup.key(opt_b, b)  # step 1 and step 2
    opt_b.param_groups[0]["lr"] = 0.2
    c = torch.ones(1, requires_grad=True)
    opt_c = torch.optim.Adam([c], lr=0.1)
    c.grad = torch.ones_like(c)
    opt_c.step()
    assert FlatGroup.key(opt_a, a) == FlatGroup.key(opt_c, c)
    opt_c.param_groups[0]["lr"] = 0.2
    assert FlatGroup.key(opt_a, a) != FlatGroup.key(opt_c, c)  # another rate
