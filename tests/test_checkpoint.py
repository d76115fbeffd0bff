"""Checkpoints: one file holds everything a run needs; N steps + save + load in a fresh process
+ M steps equals N + M steps bit for bit; a bad file raises ValueError and loads nothing."""

import os
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import constraints

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.checkpoint import load_checkpoint, save_checkpoint
from miniprob.infer import SVI, Trace_ELBO
from miniprob.optim import Adam, OneCycleLR, StepLR

# A run with every source of state a checkpoint must carry: constrained params, an nn.Module
# registered with pyro.module, Adam moments, a scheduler's epoch, a subsampled plate (torch
# RNG), and data jitter drawn from Python's and NumPy's RNGs.
RUN = textwrap.dedent(
    """
    import random, sys
    import numpy as np
    import torch
    import miniprob as pyro
    import miniprob.distributions as dist
    from torch.distributions import constraints
    from miniprob.checkpoint import load_checkpoint, save_checkpoint
    from miniprob.infer import SVI, Trace_ELBO
    from miniprob.optim import StepLR

    data = torch.linspace(-1.0, 1.0, 20)

    def make(seed):
        pyro.clear_param_store()
        torch.manual_seed(seed)
        net = torch.nn.Linear(1, 1)

        def model(data):
            pyro.module("net", net)
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.plate("data", len(data), subsample_size=8) as idx:
                x = data[idx] + 0.01 * random.random() + 0.01 * float(np.random.rand())
                loc = net(x.unsqueeze(-1)).squeeze(-1) + z
                pyro.sample("obs", dist.Normal(loc, 0.5), obs=2.0 * x)

        def guide(data):
            loc = pyro.param("z_loc", torch.tensor(0.1))
            scale = pyro.param("z_scale", torch.tensor(0.5), constraint=constraints.positive)
            pyro.sample("z", dist.Normal(loc, scale))

        adam = {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.05}}
        sched = StepLR({**adam, "step_size": 3, "gamma": 0.5})
        return net, SVI(model, guide, sched, Trace_ELBO()), sched

    def steps(svi, sched, n):
        losses = []
        for _ in range(n):
            losses.append(svi.step(data))
            sched.step()
        return losses

    def seed_all(seed):
        pyro.set_rng_seed(seed)

    def result(net, losses):
        store = pyro.get_param_store()
        return {
            "params": {k: v.detach().clone() for k, v in store.named_parameters()},
            "net": {k: v.detach().clone() for k, v in net.named_parameters()},
            "net_is_store": all(
                store.unconstrained("net$$$" + k) is v for k, v in net.named_parameters()
            ),
            "losses": losses,
        }

    mode, n, m, ckpt, out = sys.argv[1:]
    n, m = int(n), int(m)
    if mode == "first":
        seed_all(0)
        net, svi, sched = make(0)
        reference = result(net, steps(svi, sched, n + m))
        seed_all(0)
        net, svi, sched = make(0)
        first = steps(svi, sched, n)
        save_checkpoint(ckpt, optim=sched, scheduler=sched, extra={"losses": first})
        torch.save(reference, out)
    else:
        seed_all(123)  # a different state everywhere: the checkpoint must replace it all
        net, svi, sched = make(123)
        extra = load_checkpoint(ckpt, optim=sched, scheduler=sched, modules={"net": net})
        losses = extra["losses"] + steps(svi, sched, m)
        torch.save(result(net, losses), out)
    """
)


def _python(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr


def test_resume_in_a_fresh_process_is_bit_for_bit(tmp_path, monkeypatch):
    script = tmp_path / "run.py"
    script.write_text(RUN)
    ckpt, ref, resumed = tmp_path / "run.ckpt", tmp_path / "ref.pt", tmp_path / "resumed.pt"
    n, m = 7, 9
    # The reference run and the first N steps run here; the resumed run in a fresh process.
    monkeypatch.setattr(sys, "argv", ["run.py", "first", str(n), str(m), str(ckpt), str(ref)])
    runpy.run_path(str(script), run_name="__main__")
    _python(str(script), "resume", str(n), str(m), str(ckpt), str(resumed), cwd=tmp_path)
    ref, resumed = torch.load(ref), torch.load(resumed)
    assert ref["losses"] == resumed["losses"]
    assert ref["params"].keys() == resumed["params"].keys()
    for name, value in ref["params"].items():
        assert torch.equal(value, resumed["params"][name]), name
    for name, value in ref["net"].items():
        assert torch.equal(value, resumed["net"][name]), name
    assert resumed["net_is_store"]


def _model(data):
    net = pyro.module("net", _model.net)
    w = pyro.param("w", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(net(data.unsqueeze(-1)).squeeze(-1) * w, 1.0), obs=data)


def _svi():
    return SVI(_model, lambda data: None, Adam({"lr": 0.05}), Trace_ELBO())


def _train(svi, n):
    data = torch.linspace(0.0, 1.0, 5)
    return [svi.step(data) for _ in range(n)]


def _state():
    store = pyro.get_param_store()
    return {k: (v, v.detach().clone()) for k, v in store.named_parameters()}


def test_a_registered_module_is_updated_in_place_and_trains_on(tmp_path):
    _model.net = torch.nn.Linear(1, 1)
    svi = _svi()
    _train(svi, 3)
    path = tmp_path / "ckpt"
    save_checkpoint(path, optim=svi.optim)
    expected = _train(svi, 4)
    expected_params = {k: v.detach().clone() for k, v in _model.net.named_parameters()}
    weight = _model.net.weight
    load_checkpoint(path, optim=svi.optim)
    assert _model.net.weight is weight  # same object, loaded values
    assert pyro.get_param_store().unconstrained("net$$$weight") is weight
    assert _train(svi, 4) == expected
    for k, v in _model.net.named_parameters():
        assert torch.equal(v.detach(), expected_params[k])


def test_update_module_params_after_a_load_without_modules(tmp_path):
    _model.net = torch.nn.Linear(1, 1)
    svi = _svi()
    _train(svi, 3)
    path = tmp_path / "ckpt"
    save_checkpoint(path, optim=svi.optim)
    expected = _train(svi, 3)
    pyro.clear_param_store()
    _model.net = net = torch.nn.Linear(1, 1)  # a new module with other values
    optim = Adam({"lr": 0.05})
    load_checkpoint(path, optim=optim)
    pyro.module("net", net, update_module_params=True)
    assert net.weight is pyro.get_param_store().unconstrained("net$$$weight")
    assert _train(SVI(_model, lambda data: None, optim, Trace_ELBO()), 3) == expected


def test_contents_round_trip(tmp_path):
    pyro.param("a", torch.tensor([0.2, 0.7]), constraint=constraints.unit_interval)
    pyro.param("L", torch.eye(2), constraint=constraints.lower_cholesky)
    torch.manual_seed(5)
    path = tmp_path / "ckpt"
    save_checkpoint(path, extra={"epoch": 4, "note": "x"})
    draw = torch.randn(3)
    saved = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    pyro.clear_param_store()
    pyro.param("other", torch.tensor(1.0))
    assert load_checkpoint(path) == {"epoch": 4, "note": "x"}
    store = pyro.get_param_store()
    assert list(store.keys()) == ["a", "L"]  # exactly the saved store
    assert store.get_constraint("a") is constraints.unit_interval
    for k, v in saved.items():
        assert torch.equal(store.unconstrained(k), v)
    assert torch.equal(torch.randn(3), draw)  # the RNG continues where it was saved


def _corrupt_cases(path):
    data = path.read_bytes()
    middle = len(data) // 2
    return {
        "truncated": data[: len(data) - 10],
        "truncated header": data[:25],
        "flipped byte": data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :],
        "not a checkpoint": b"hello world" * 10,
        "empty": b"",
        "trailing bytes": data + b"\0",
    }


@pytest.mark.parametrize(
    "case, message",
    [
        ("truncated", "truncated"),
        ("truncated header", "truncated"),
        ("flipped byte", "corrupted"),
        ("not a checkpoint", "not a miniprob checkpoint"),
        ("empty", "not a miniprob checkpoint"),
        ("trailing bytes", "trailing bytes"),
    ],
)
def test_a_bad_file_raises_and_loads_nothing(tmp_path, case, message):
    pyro.param("w", torch.tensor([1.0, 2.0]))
    optim = Adam({"lr": 0.1})
    good = tmp_path / "good.ckpt"
    save_checkpoint(good, optim=optim)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(_corrupt_cases(good)[case])
    with torch.no_grad():
        pyro.get_param_store().unconstrained("w").fill_(7.0)
    pyro.param("extra_param", torch.tensor(3.0))
    before = _state()
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match=message) as info:
        load_checkpoint(bad, optim=optim)
    assert str(bad) in str(info.value)
    after = _state()
    assert after.keys() == before.keys()
    for k, (leaf, value) in before.items():
        assert after[k][0] is leaf and torch.equal(after[k][1], value)
    assert torch.equal(torch.get_rng_state(), rng)
    assert optim.get_state() == {}


def test_missing_file_and_missing_parts(tmp_path):
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "nope")
    pyro.param("w", torch.tensor(1.0))
    path = tmp_path / "ckpt"
    save_checkpoint(path)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        load_checkpoint(path, optim=Adam({"lr": 0.1}))
    net = torch.nn.Linear(2, 1)
    pyro.module("net", torch.nn.Linear(3, 1))
    save_checkpoint(path)
    with pytest.raises(ValueError, match=r"param 'net\$\$\$weight' has shape \(1, 3\)"):
        load_checkpoint(path, modules={"net": net})
    with pytest.raises(TypeError, match="optim must be a miniprob.optim optimizer"):
        save_checkpoint(path, optim=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1))


def test_a_crash_mid_save_keeps_the_old_file(tmp_path, monkeypatch):
    pyro.param("w", torch.tensor(1.0))
    path = tmp_path / "ckpt"
    save_checkpoint(path, extra="old")
    old = path.read_bytes()

    def crash(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk on fire"):
        save_checkpoint(path, extra="new")
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["ckpt"]  # no temporary file left behind
    assert load_checkpoint(path) == "old"


_CONSTRAINTS = [
    constraints.real,
    constraints.positive,
    constraints.unit_interval,
    constraints.simplex,
    constraints.interval(-2.0, 3.0),
]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(range(len(_CONSTRAINTS))), st.integers(1, 4)),
        min_size=0,
        max_size=5,
    ),
    st.integers(0, 2**31 - 1),
)
def test_round_trip_property(tmp_path_factory, specs, seed):
    """Any store with any constraints comes back equal, constraint for constraint."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    for i, (c, size) in enumerate(specs):
        constraint = _CONSTRAINTS[c]
        init = torch.distributions.transform_to(constraint)(torch.randn(size))
        pyro.param(f"p{i}", init, constraint=constraint)
    saved = pyro.get_param_store().get_state()
    path = tmp_path_factory.mktemp("rt") / "ckpt"
    save_checkpoint(path)
    pyro.clear_param_store()
    load_checkpoint(path)
    state = pyro.get_param_store().get_state()
    assert list(state["params"]) == list(saved["params"])
    for k, v in saved["params"].items():
        assert torch.equal(state["params"][k], v)
        assert state["constraints"][k] is saved["constraints"][k] or repr(
            state["constraints"][k]
        ) == repr(saved["constraints"][k])


def test_constraints_with_tensor_bounds_load(tmp_path):
    path = tmp_path / "c.ckpt"
    pyro.param("a", torch.tensor(1.0))
    bound = constraints.greater_than(torch.tensor([0.0, 1.0]))
    pyro.param("b", torch.tensor([0.5, 2.0]), constraint=bound)
    save_checkpoint(path)
    pyro.clear_param_store()
    load_checkpoint(path)
    assert list(pyro.get_param_store().keys()) == ["a", "b"]
    assert pyro.param("b").tolist() == pytest.approx([0.5, 2.0])


def test_load_checks_the_optimizer_types_before_changing_anything(tmp_path):
    path = tmp_path / "c.ckpt"
    sched = StepLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.1}, "step_size": 2})
    pyro.param("w", torch.tensor(1.0))
    save_checkpoint(path, optim=sched, scheduler=sched)
    pyro.param("new", torch.tensor(3.0))
    with pytest.raises(TypeError, match="scheduler must be a miniprob.optim scheduler"):
        load_checkpoint(path, scheduler=Adam({"lr": 0.1}))
    assert sorted(pyro.get_param_store().keys()) == ["new", "w"]


def test_resuming_a_one_cycle_schedule_is_exact(tmp_path):
    """OneCycleLR also cycles the momentum, which the optimizer's state keeps."""
    path = tmp_path / "c.ckpt"
    args = {"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.1, "momentum": 0.9}}
    sched = OneCycleLR({**args, "max_lr": 0.1, "total_steps": 20})

    def step():
        w = pyro.param("w", torch.tensor(1.0))
        (w**2).backward()
        sched([w.unconstrained()])
        w.unconstrained().grad = None
        sched.step()

    for _ in range(3):
        step()
    save_checkpoint(path, optim=sched, scheduler=sched)
    for _ in range(3):
        step()
    straight = pyro.param("w").item()
    load_checkpoint(path, optim=sched, scheduler=sched)
    for _ in range(3):
        step()
    assert pyro.param("w").item() == straight and len(sched.optimizers()) == 1
