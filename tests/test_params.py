"""ParamStore: constrained values over unconstrained leaves, errors, dict interface, state,
files, scopes, and modules."""

import os
import threading

import pytest
import torch

import miniprob as mp
from miniprob import poutine
from miniprob.distributions import constraints
from miniprob.params import ParamStore


def store():
    return mp.get_param_store()


# ---- constrained values -----------------------------------------------------------------------


def test_constrained_value_over_an_unconstrained_leaf():
    s = mp.param("s", torch.tensor([0.5, 2.0]), constraint=constraints.positive)
    leaf = store().unconstrained("s")
    assert leaf.is_leaf and leaf.requires_grad
    torch.testing.assert_close(leaf, torch.tensor([0.5, 2.0]).log())
    torch.testing.assert_close(s, torch.tensor([0.5, 2.0]))
    assert s.unconstrained() is leaf
    s.sum().backward()
    torch.testing.assert_close(leaf.grad, torch.tensor([0.5, 2.0]))  # d exp(u) / du


def test_reading_recomputes_from_the_leaf():
    mp.param("s", torch.tensor(1.0), constraint=constraints.positive)
    with torch.no_grad():
        store().unconstrained("s").add_(1.0)
    torch.testing.assert_close(mp.param("s"), torch.tensor(1.0).exp())


def test_real_params_are_their_own_leaf():
    init = torch.tensor([1.0, 2.0])
    w = mp.param("w", init)
    assert w is store().unconstrained("w") and w.unconstrained() is w
    assert w.requires_grad


def test_init_as_a_thunk_is_called_once():
    calls = []

    def init():
        calls.append(1)
        return torch.ones(3)

    mp.param("t", init)
    mp.param("t", init)
    assert calls == [1]
    assert mp.param("t").shape == (3,)


def test_init_keyword_is_init_tensor():
    a = mp.param("a", init=torch.tensor(2.0), constraint=constraints.positive)
    b = mp.param("b", init_tensor=torch.tensor(2.0), constraint=constraints.positive)
    assert torch.equal(a, b) and store().get_constraint("a") is constraints.positive
    with poutine.trace() as tr:
        mp.param("c", init=lambda: torch.zeros(2))
    assert tr.trace.nodes["c"]["value"].shape == (2,)
    with pytest.raises(TypeError, match="'d'.*not both"):
        mp.param("d", torch.zeros(1), init=torch.zeros(1))
    assert "d" not in store()


def test_later_calls_ignore_init_and_constraint():
    mp.param("p", torch.tensor(2.0), constraint=constraints.positive)
    p = mp.param("p", torch.tensor(-5.0), constraint=constraints.real)
    assert p.item() == pytest.approx(2.0)
    assert store().get_constraint("p") is constraints.positive


def test_integer_init_becomes_floating():
    assert mp.param("i", torch.tensor([1, 2])).dtype == torch.get_default_dtype()


def test_unknown_name_names_it():
    with pytest.raises(KeyError, match="'nope'"):
        mp.param("nope")
    with pytest.raises(KeyError, match="'nope'"):
        store()["nope"]


@pytest.mark.parametrize(
    "init, constraint, word",
    [
        (torch.tensor([-1.0]), constraints.positive, "GreaterThan"),
        (torch.tensor([0.0, 1.0]), constraints.positive, "GreaterThan"),
        (torch.tensor(0.5), constraints.greater_than(1.0), "GreaterThan"),
        (torch.tensor([float("nan")]), constraints.real, "not finite"),
        (torch.tensor([1.0, float("inf")]), constraints.positive, "not finite"),
    ],
)
def test_init_outside_the_support_is_rejected_and_the_store_unchanged(init, constraint, word):
    mp.param("keep", torch.tensor(1.0))
    before = dict(store().named_parameters())
    with pytest.raises(ValueError, match="'bad'") as info:
        mp.param("bad", init, constraint=constraint)
    assert word in str(info.value)
    assert dict(store().named_parameters()) == before
    with pytest.raises(ValueError, match="'keep'"):
        store()["keep"] = init if word == "not finite" else torch.tensor(float("nan"))
    assert store()["keep"].item() == 1.0


@pytest.mark.parametrize(
    "init, constraint",
    [
        (torch.tensor([0.2, 0.2]), constraints.simplex),
        (torch.tensor(1.5), constraints.unit_interval),
        (torch.tensor([[1.0, 2.0], [3.0, 4.0]]), constraints.lower_cholesky),
    ],
)
def test_init_outside_the_support_with_a_finite_inverse_is_accepted_as_in_pyro(init, constraint):
    import pyro

    pyro.clear_param_store()
    expected = pyro.param("p", init, constraint=constraint)
    got = mp.param("p", init, constraint=constraint)
    assert torch.equal(got, expected) and bool(constraint.check(got).all())
    pyro.clear_param_store()


def test_setitem_outside_the_constraint_keeps_the_old_value():
    mp.param("s", torch.tensor(2.0), constraint=constraints.positive)
    leaf = store().unconstrained("s")
    with pytest.raises(ValueError, match="'s'"):
        store()["s"] = torch.tensor(-1.0)
    assert store().unconstrained("s") is leaf
    assert store().param_name(leaf) == "s"


class _NoTransform(constraints.Constraint):
    def check(self, value):
        return torch.ones_like(value, dtype=torch.bool)


@pytest.mark.parametrize("bad", [_NoTransform(), "positive", None])
def test_unknown_constraint_objects_are_rejected(bad):
    with pytest.raises(ValueError, match="'c'"):
        mp.param("c", torch.tensor(1.0), constraint=bad)
    assert "c" not in store()


# ---- dict interface ---------------------------------------------------------------------------


def test_dict_interface():
    ps = ParamStore()
    ps["a"] = torch.tensor(1.0)
    ps.setdefault("b", torch.tensor([2.0, 3.0]), constraints.positive)
    assert list(ps) == ["a", "b"] and list(ps.keys()) == ["a", "b"] and len(ps) == 2
    assert "a" in ps and "z" not in ps
    assert ps.get_all_param_names() == ["a", "b"]
    values = dict(ps.items())
    torch.testing.assert_close(values["b"], torch.tensor([2.0, 3.0]))
    assert [v.shape for v in ps.values()] == [(), (2,)]
    ps["b"] = torch.tensor([4.0, 5.0])  # keeps its constraint
    assert ps.get_constraint("b") is constraints.positive
    torch.testing.assert_close(ps.unconstrained("b"), torch.tensor([4.0, 5.0]).log())
    del ps["a"]
    assert list(ps) == ["b"]
    ps.clear()
    assert len(ps) == 0


def test_named_parameters_are_the_leaves():
    mp.param("a", torch.tensor(1.0))
    mp.param("b", torch.tensor(0.5), constraint=constraints.unit_interval)
    named = dict(store().named_parameters())
    assert named["a"] is store().unconstrained("a")
    assert named["b"] is store().unconstrained("b")
    assert all(v.is_leaf and v.requires_grad for v in named.values())
    assert store().param_name(named["b"]) == "b"
    optim = torch.optim.SGD(named.values(), lr=0.1)
    mp.param("b").backward()
    optim.step()
    assert mp.param("b").item() < 0.5


# ---- state and files --------------------------------------------------------------------------


def fill(ps):
    ps.setdefault("loc", torch.tensor([0.1, -0.2]))
    ps.setdefault("scale", torch.tensor([1.5]), constraints.positive)
    ps.setdefault("probs", torch.tensor([0.2, 0.3, 0.5]), constraints.simplex)


def assert_same_store(a, b):
    assert list(a.keys()) == list(b.keys())
    for name in a.keys():
        torch.testing.assert_close(a[name], b[name])
        assert type(a.get_constraint(name)) is type(b.get_constraint(name))


def test_get_state_set_state_round_trip():
    ps = ParamStore()
    fill(ps)
    state = ps.get_state()
    with torch.no_grad():
        ps.unconstrained("loc").add_(10.0)  # the snapshot is a copy
    other = ParamStore()
    other.setdefault("kept", torch.tensor(1.0))
    other.setdefault("loc", torch.tensor(5.0))
    other.set_state(state)
    assert list(other.keys()) == ["kept", "loc", "scale", "probs"]  # merged, as in Pyro
    assert other["kept"].item() == 1.0
    torch.testing.assert_close(other["loc"], torch.tensor([0.1, -0.2]))
    assert other.unconstrained("loc").requires_grad and other.unconstrained("loc").is_leaf


def test_set_state_with_an_unknown_constraint_leaves_the_store_unchanged():
    ps = ParamStore()
    fill(ps)
    bad = {"params": {"x": torch.zeros(1)}, "constraints": {"x": _NoTransform()}}
    with pytest.raises(ValueError, match="'x'"):
        ps.set_state(bad)
    assert list(ps.keys()) == ["loc", "scale", "probs"]


def test_save_and_load(tmp_path):
    ps = ParamStore()
    fill(ps)
    path = tmp_path / "params.pt"
    ps.save(path)
    loaded = ParamStore()
    loaded.load(path)
    assert_same_store(ps, loaded)
    assert [p.name for p in tmp_path.iterdir()] == ["params.pt"]  # no temporary file left


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="other.pt"):
        ParamStore().load(path)


def test_a_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    ps = ParamStore()
    fill(ps)
    path = tmp_path / "params.pt"
    ps.save(path)
    old_bytes = path.read_bytes()

    real_save = torch.save

    def save_then_crash(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_then_crash)
    ps.setdefault("new", torch.tensor(3.0))
    with pytest.raises(OSError, match="disk full"):
        ps.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["params.pt"]
    loaded = ParamStore()
    loaded.load(path)
    assert "new" not in loaded and list(loaded.keys()) == ["loc", "scale", "probs"]


# ---- scope ------------------------------------------------------------------------------------


def test_scope_is_a_fresh_store_inside_the_block():
    mp.param("outer", torch.tensor(1.0))
    with store().scope() as inner:
        assert mp.get_param_store() is inner and len(inner) == 0
        mp.param("inside", torch.tensor(2.0))
        with pytest.raises(KeyError):
            mp.param("outer")
        tr = poutine.trace(lambda: mp.param("traced", torch.tensor(3.0))).get_trace()
        assert tr.nodes["traced"]["value"].item() == 3.0
    assert list(store().keys()) == ["outer"]
    assert list(inner.keys()) == ["inside", "traced"]


def test_scopes_in_two_threads_are_isolated():
    barrier = threading.Barrier(2, timeout=10)
    seen, errors = {}, []

    def worker(tag, value):
        try:
            with mp.get_param_store().scope() as s:
                mp.param("shared_name", torch.tensor(value))
                barrier.wait()  # both threads have written before either reads
                seen[tag] = (mp.param("shared_name").item(), list(s.keys()))
                barrier.wait()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=a) for a in (("a", 1.0), ("b", 2.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert seen == {"a": (1.0, ["shared_name"]), "b": (2.0, ["shared_name"])}
    assert "shared_name" not in store()


# ---- module -----------------------------------------------------------------------------------


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 3)
        self.out = torch.nn.Linear(3, 1)


def test_module_names_and_leaves():
    net = Net()
    assert mp.module("net", net) is net
    names = sorted(store().keys())
    assert names == ["net$$$fc.bias", "net$$$fc.weight", "net$$$out.bias", "net$$$out.weight"]
    assert store().unconstrained("net$$$fc.weight") is net.fc.weight
    assert mp.param("net$$$out.bias") is net.out.bias
    optim = torch.optim.SGD([v for _, v in store().named_parameters()], lr=1.0)
    before = net.fc.weight.detach().clone()
    net.out(net.fc(torch.ones(1, 2))).sum().backward()
    optim.step()
    assert not torch.equal(net.fc.weight, before)  # the module trained in place


def test_module_sites_in_a_trace():
    tr = poutine.trace(lambda: mp.module("net", Net())).get_trace()
    assert [n for n in tr.param_nodes] == [
        "net$$$fc.weight",
        "net$$$fc.bias",
        "net$$$out.weight",
        "net$$$out.bias",
    ]


def test_module_update_module_params_after_load(tmp_path):
    net = Net()
    mp.module("net", net)
    path = tmp_path / "net.pt"
    store().save(path)
    saved = net.fc.weight.detach().clone()
    with torch.no_grad():
        net.fc.weight.zero_()
    store().load(path)
    fresh = Net()
    mp.module("net", fresh, update_module_params=True)
    assert torch.equal(fresh.fc.weight, saved)
    assert fresh.fc.weight is store().unconstrained("net$$$fc.weight")


def test_module_argument_errors():
    with pytest.raises(TypeError, match="'net'"):
        mp.module("net", Net)
    with pytest.raises(TypeError, match="'net'"):
        mp.module("net", object())
    with pytest.raises(ValueError, match=r"\$\$\$"):
        mp.module("a$$$b", Net())


def test_frozen_module_parameters_are_skipped_with_a_warning():
    net = Net()
    net.fc.weight.requires_grad_(False)
    with pytest.warns(UserWarning, match="fc.weight"):
        mp.module("net", net)
    assert "net$$$fc.weight" not in store()
