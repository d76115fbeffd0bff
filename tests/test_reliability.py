"""Reliability and security, round 2: no code runs from a loaded file, saves keep torch.save's
permissions and clean up after killed writers, every load checks before it changes anything, a
failed step removes only its own parameters, and silent wrong results become errors."""

import copy
import hashlib
import io
import math
import os
import random
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import constraints

import miniprob as pyro
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.checkpoint import _HEADER, _MAGIC, load_checkpoint, save_checkpoint
from miniprob.infer import SVI, Trace_ELBO
from miniprob.optim import Adam, StepLR

DATA = Path(__file__).parent / "data"


class _Payload:
    """Unpickling this object would create ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_checkpoint(path: Path, state: object) -> None:
    """A checkpoint file as save_checkpoint frames it (header, SHA-256), holding ``state``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    path.write_bytes(
        _MAGIC + _HEADER.pack(len(payload), hashlib.sha256(payload).digest()) + payload
    )


def _read_state(path: Path) -> dict:
    """The contents of a checkpoint this test wrote (so unpickled without restriction)."""
    return torch.load(
        io.BytesIO(path.read_bytes()[len(_MAGIC) + _HEADER.size :]), weights_only=False
    )


def _store_snapshot() -> dict:
    store = pyro.get_param_store()
    return {n: store.unconstrained(n).detach().clone() for n in store.keys()}


def _same_store(before: dict) -> bool:
    after = _store_snapshot()
    return before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)


def _model():
    pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))


def _guide():
    loc = pyro.param("loc", torch.tensor([0.5, -0.5]))
    scale = pyro.param("scale", torch.tensor([1.0, 2.0]), constraint=constraints.positive)
    pyro.sample("z", dist.Normal(loc, scale).to_event(1))


# ---- loading runs no code -------------------------------------------------------------------


def test_hostile_param_store_file_runs_nothing_and_changes_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "params.pt"
    torch.save({"params": {"w": _Payload(marker)}, "constraints": {"w": constraints.real}}, path)
    pyro.param("kept", torch.tensor(1.0))
    before = _store_snapshot()
    with pytest.raises(ValueError, match="holds objects miniprob will not load"):
        pyro.get_param_store().load(path)
    assert not marker.exists()
    assert _same_store(before)


def test_hostile_optimizer_file_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "optim.pt"
    torch.save({"w": _Payload(marker)}, path)
    adam = Adam({"lr": 0.1})
    with pytest.raises(ValueError, match="holds objects miniprob will not load"):
        adam.load(path)
    assert not marker.exists()
    assert adam.get_state() == {}


def test_hostile_checkpoint_runs_nothing_and_changes_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "run.ckpt"
    pyro.param("kept", torch.tensor(1.0))
    save_checkpoint(path)
    state = _read_state(path)
    state["extra"] = _Payload(marker)
    _write_checkpoint(path, state)  # a valid checksum: whoever writes the file computes it
    pyro.clear_param_store()
    pyro.param("other", torch.tensor(2.0))
    before, rng = _store_snapshot(), torch.get_rng_state()
    with pytest.raises(ValueError, match="will not load"):
        load_checkpoint(path)
    assert not marker.exists()
    assert _same_store(before)
    assert torch.equal(torch.get_rng_state(), rng)


def test_trusted_opt_in_loads_any_pickle(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "optim.pt"
    torch.save({}, path)
    Adam({"lr": 0.1}).load(path, trusted=True)
    torch.save({"w": _Payload(marker)}, path)
    with pytest.raises(Exception):  # noqa: B017 - the payload ran; what fails next is torch's
        Adam({"lr": 0.1}).load(path, trusted=True)
    assert marker.exists()


def test_files_written_by_main_keep_loading():
    """tests/data holds files written by miniprob before loads became weights-only (the
    commit before this change): a param store, an optimizer, a checkpoint with a scheduler."""
    store = pyro.get_param_store()
    store.load(DATA / "main_params.pt")
    assert list(store.keys()) == ["loc", "scale", "w", "u"]
    assert store["scale"].tolist() == pytest.approx([0.88971806, 2.16120148])
    assert store.get_constraint("w") is constraints.simplex
    assert store["u"].item() == pytest.approx(0.25)
    pyro.clear_param_store()
    adam = Adam({"lr": 0.1})
    adam.load(DATA / "main_optim.pt")
    assert sorted(adam.get_state()) == ["loc", "scale", "u", "w"]
    pyro.clear_param_store()
    sched = StepLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.05}, "step_size": 2, "gamma": 0.5}
    )
    extra = load_checkpoint(DATA / "main_checkpoint.ckpt", scheduler=sched)
    assert extra["epoch"] == 3 and extra["note"] == "main"
    assert torch.equal(extra["t"], torch.arange(3))
    assert pyro.param("loc").tolist() == pytest.approx([0.44899008, -0.42757127])
    assert sched.get_scheduler_state()["epoch"] == 3
    SVI(_model, _guide, sched, Trace_ELBO()).step()  # trains on from the loaded state


@pytest.mark.parametrize(
    "constraint",
    [
        constraints.positive,
        constraints.unit_interval,
        constraints.interval(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0])),
        constraints.greater_than(torch.tensor(0.5)),
        constraints.less_than(3.0),
        constraints.independent(constraints.positive, 1),
        constraints.simplex,
        constraints.lower_cholesky,
        constraints.cat([constraints.real, constraints.positive], 0, [1, 1]),
    ],
    ids=repr,
)
def test_params_under_torch_constraints_round_trip_through_safe_loads(tmp_path, constraint):
    init = {
        constraints.simplex: torch.tensor([0.5, 0.5]),
        constraints.lower_cholesky: torch.eye(2),
    }.get(constraint, torch.tensor([0.8, 1.5]))
    pyro.param("p", init, constraint=constraint)
    expected = pyro.param("p").detach().clone()
    pyro.get_param_store().save(tmp_path / "params.pt")
    save_checkpoint(tmp_path / "run.ckpt")
    for load in (
        lambda: pyro.get_param_store().load(tmp_path / "params.pt"),
        lambda: load_checkpoint(tmp_path / "run.ckpt"),
    ):
        pyro.clear_param_store()
        load()
        assert torch.equal(pyro.param("p"), expected)
        assert type(pyro.get_param_store().get_constraint("p")) is type(constraint)


def test_numpy_arrays_written_under_numpy_1_load():
    """NumPy 1 named the array constructor numpy.core.multiarray._reconstruct (NumPy 2:
    numpy._core): an RNG state in a file written then still loads."""
    import zipfile

    buffer = io.BytesIO()
    torch.save({"key": np.arange(3, dtype=np.uint32)}, buffer)
    source, rewritten = zipfile.ZipFile(io.BytesIO(buffer.getvalue())), io.BytesIO()
    with zipfile.ZipFile(rewritten, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(item, data)
    rewritten.seek(0)
    from miniprob.atomic import safe_load

    assert safe_load(rewritten, "file")["key"].tolist() == [0, 1, 2]


def test_extra_is_checked_when_saving(tmp_path):
    path = tmp_path / "run.ckpt"
    with pytest.raises(ValueError, match="extra=.*will not load"):
        save_checkpoint(path, extra={"bad": _Payload(tmp_path / "marker")})
    assert not path.exists() and not (tmp_path / "marker").exists()
    save_checkpoint(path, extra={"epoch": 1, "arr": np.arange(3), "t": torch.ones(2), "s": {1}})
    extra = load_checkpoint(path)
    assert extra["epoch"] == 1 and extra["s"] == {1}
    assert np.array_equal(extra["arr"], np.arange(3))


# ---- files ----------------------------------------------------------------------------------


@pytest.fixture
def umask():
    def set_umask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield set_umask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_saved_files_get_torch_save_permissions(tmp_path, umask):
    umask(0o022)
    reference = tmp_path / "reference.pt"
    torch.save({}, reference)
    pyro.param("w", torch.zeros(1))
    new = tmp_path / "params.pt"
    pyro.get_param_store().save(new)
    assert _mode(new) == _mode(reference) == 0o644
    save_checkpoint(tmp_path / "run.ckpt")
    assert _mode(tmp_path / "run.ckpt") == 0o644
    umask(0o077)
    Adam({"lr": 0.1}).save(tmp_path / "fresh.pt")
    assert _mode(tmp_path / "fresh.pt") == 0o600
    pyro.get_param_store().save(new)  # overwriting keeps the file's mode, as torch.save does
    assert _mode(new) == 0o644


def test_temp_files_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "params.pt"
    script = textwrap.dedent(
        f"""
        import os
        from miniprob.atomic import atomic_write
        os.replace = lambda *args: os._exit(9)  # killed after writing, before the rename
        atomic_write({str(path)!r}, b"partial")
        """
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, check=False)
    assert done.returncode == 9
    leftovers = [p for p in tmp_path.iterdir() if p.name != "params.pt"]
    assert len(leftovers) == 1 and not path.exists()
    pyro.param("w", torch.zeros(1))
    pyro.get_param_store().save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.pt"]


@pytest.mark.parametrize("which", ["empty", "directory", "trailing separator", "no folder"])
def test_bad_paths_fail_before_anything_is_written(tmp_path, which):
    path = {
        "empty": "",
        "directory": str(tmp_path),
        "trailing separator": str(tmp_path / "new") + os.sep,
        "no folder": str(tmp_path / "missing" / "run.ckpt"),
    }[which]
    pyro.param("w", torch.zeros(1))
    error = FileNotFoundError if which == "no folder" else ValueError
    for save in (
        lambda: save_checkpoint(path),
        lambda: pyro.get_param_store().save(path),
        lambda: Adam({"lr": 0.1}).save(path),
    ):
        with pytest.raises(error, match="save"):
            save()
    assert list(tmp_path.iterdir()) == []


# ---- every load checks before it changes anything -------------------------------------------


def _trained(tmp_path):
    adam = Adam({"lr": 0.1})
    svi = SVI(_model, _guide, adam, Trace_ELBO())
    svi.step()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, optim=adam)
    state = _read_state(path)
    return adam, path, state


def test_checkpoint_with_a_malformed_rng_state_changes_nothing(tmp_path):
    adam, path, state = _trained(tmp_path)
    state["rng"]["random"] = (3, (1, 2), None)
    _write_checkpoint(path, state)
    pyro.clear_param_store()
    pyro.param("other", torch.tensor(2.0))
    before, rng, py_rng = _store_snapshot(), torch.get_rng_state(), random.getstate()
    with pytest.raises(ValueError, match="RNG state 'random'"):
        load_checkpoint(path, optim=adam)
    assert _same_store(before)
    assert torch.equal(torch.get_rng_state(), rng) and random.getstate() == py_rng
    state["rng"]["torch"] = torch.zeros(3)
    _write_checkpoint(path, state)
    with pytest.raises(ValueError, match="RNG state 'torch'"):
        load_checkpoint(path)
    assert _same_store(before)


def test_checkpoint_with_wrong_moment_shapes_names_the_parameter(tmp_path):
    adam, path, state = _trained(tmp_path)
    state["optim"]["loc"]["state"][0]["exp_avg"] = torch.zeros(3)
    _write_checkpoint(path, state)
    pyro.clear_param_store()
    before = _store_snapshot()
    fresh = Adam({"lr": 0.1})
    with pytest.raises(ValueError, match=r"param 'loc': 'exp_avg' has shape \(3,\).*\(2,\)"):
        load_checkpoint(path, optim=fresh)
    assert _same_store(before) and fresh.get_state() == {}


def test_optimizer_file_with_wrong_moment_shapes_names_the_parameter(tmp_path):
    adam, path, _ = _trained(tmp_path)
    state = adam.get_state()
    state["scale"]["state"][0]["exp_avg_sq"] = torch.zeros(5)
    torch.save(state, tmp_path / "optim.pt")
    other = Adam({"lr": 0.1})
    with pytest.raises(ValueError, match="param 'scale': 'exp_avg_sq' has shape"):
        other.load(tmp_path / "optim.pt")
    assert other.get_state() == {}
    # Loaded before its parameter exists: refused when the parameter appears, naming it.
    pyro.clear_param_store()
    other.set_state(state)
    svi = SVI(_model, _guide, other, Trace_ELBO())
    with pytest.raises(ValueError, match="param 'scale': 'exp_avg_sq'"):
        svi.step()
    assert "scale" not in pyro.get_param_store()


def test_optimizer_state_torch_refuses_for_one_parameter_changes_none(tmp_path):
    adam, _, _ = _trained(tmp_path)
    before = adam.get_state()
    state = copy.deepcopy(before)
    state["loc"]["state"][0]["exp_avg"] = torch.full((2,), 7.0)
    state["scale"]["param_groups"][0]["params"] = [0, 1]  # torch: size mismatch
    with pytest.raises(ValueError, match="param 'scale'"):
        adam.set_state(state)
    after = adam.get_state()
    assert torch.equal(after["loc"]["state"][0]["exp_avg"], before["loc"]["state"][0]["exp_avg"])


@pytest.mark.parametrize("bad", [-1, 2**32, 2**33, True, 2.0])
def test_a_bad_seed_reseeds_nothing(bad):
    torch_state, py_state, np_state = (
        torch.get_rng_state(),
        random.getstate(),
        np.random.get_state(),
    )
    for call in (lambda: pyro.set_rng_seed(bad), lambda: poutine.seed(rng_seed=bad)):
        with pytest.raises(ValueError, match="'rng_seed'"):
            call()
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    pyro.set_rng_seed(2**32 - 1)  # the largest every generator accepts


def test_threads_sharing_the_default_store_undo_only_their_own_parameters():
    """A failed step in one thread removes the parameter it created, not the one another
    thread created in the default store while that step ran."""
    inside, other_done = threading.Event(), threading.Event()
    errors = []

    def failing_guide():
        pyro.param("mine", torch.tensor(0.0))
        inside.set()
        other_done.wait(10)
        raise RuntimeError("the guide fails")

    def failing():
        svi = SVI(lambda: None, failing_guide, Adam({"lr": 0.1}), Trace_ELBO())
        try:
            svi.step()
        except RuntimeError as e:
            errors.append(e)

    def other():
        inside.wait(10)
        pyro.param("theirs", torch.tensor(1.0))
        other_done.set()

    threads = [threading.Thread(target=failing), threading.Thread(target=other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(errors) == 1
    assert list(pyro.get_param_store().keys()) == ["theirs"]


# ---- silent wrong results become errors -----------------------------------------------------


def _generator_model():
    yield pyro.sample("z", dist.Normal(0.0, 1.0))


async def _async_model():
    pyro.sample("z", dist.Normal(0.0, 1.0))


async def _async_generator_model():
    yield pyro.sample("z", dist.Normal(0.0, 1.0))


@pytest.mark.parametrize(
    "program", [_generator_model, _async_model, _async_generator_model], ids=lambda f: f.__name__
)
def test_generator_and_async_models_and_guides_are_type_errors(program):
    plain = lambda: pyro.sample("z", dist.Normal(0.0, 1.0))  # noqa: E731
    with pytest.raises(TypeError, match=f"model '{program.__name__}'"):
        SVI(program, plain, Adam({"lr": 0.1}), Trace_ELBO())
    with pytest.raises(TypeError, match=f"guide '{program.__name__}'"):
        SVI(plain, program, Adam({"lr": 0.1}), Trace_ELBO())
    with pytest.raises(TypeError, match=f"guide '{program.__name__}'"):
        SVI(plain, poutine.scale(program, scale=2.0), Adam({"lr": 0.1}), Trace_ELBO())
    with pytest.raises(TypeError, match=f"model '{program.__name__}'"):
        pyro.infer.Predictive(program, num_samples=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 2.5}, "size must be a positive int, got float 2.5"),
        ({"size": 3.0}, "size must be a positive int, got float 3.0"),
        ({"size": "3"}, "size must be a positive int, got str '3'"),
        ({"size": -1}, "size must be a positive int, got -1"),
        ({"size": 0}, "size must be a positive int, got 0"),
        ({"size": torch.tensor(-2)}, "size must be a positive int, got -2"),
        ({"size": torch.tensor(2.5)}, "size must be a positive int, got a tensor"),
        ({"size": 5, "subsample_size": 0}, "subsample_size must be a positive int, got 0"),
        ({"size": 5, "subsample_size": 2.5}, "subsample_size must be a positive int"),
        (
            {"size": 5, "subsample": torch.tensor([], dtype=torch.long)},
            "subsample must be a non-empty 1-D",
        ),
        ({"size": 5, "subsample": []}, "subsample must be a non-empty 1-D"),
    ],
)
def test_bad_plate_sizes_name_the_plate(kwargs, message):
    with pytest.raises(ValueError, match=f"plate 'p': {message}"):
        with pyro.plate("p", **kwargs):
            pass


def test_a_tensor_plate_size_still_works():
    with pyro.plate("p", torch.tensor(3)) as idx:
        assert idx.tolist() == [0, 1, 2]


@pytest.mark.parametrize("arg", ["hide", "expose", "hide_types", "expose_types"])
def test_a_string_where_names_are_expected_is_a_type_error(arg):
    with pytest.raises(TypeError, match=f"block: {arg} must be a list"):
        poutine.block(**{arg: "ab"})
    with pytest.raises(TypeError, match="ParamVector: names must be a list"):
        pyro.param("ab", torch.zeros(1))
        from miniprob.flat import ParamVector

        ParamVector("ab")


def test_wrong_shaped_masks_name_the_site():
    def model():
        with poutine.mask(mask=torch.tensor([True, False, True])):
            pyro.sample("x", dist.Normal(torch.zeros(2), 1.0), obs=torch.zeros(2))

    with pytest.raises(ValueError, match=r"site 'x': the mask of shape \(3,\).*shape \(2,\)"):
        Trace_ELBO().loss(model, lambda: None)

    def repeating():  # broadcasts, but would count each log density twice
        with poutine.mask(mask=torch.ones(2, 1, dtype=torch.bool)):
            pyro.sample("y", dist.Normal(torch.zeros(2), 1.0), obs=torch.zeros(2))

    with pytest.raises(ValueError, match=r"site 'y': the mask of shape \(2, 1\)"):
        poutine.trace(repeating).get_trace().log_prob_sum()
    with pytest.raises(ValueError, match=r"mask of shape \(3,\) does not broadcast.*\(2,\)"):
        dist.Normal(torch.zeros(2), 1.0).mask(torch.tensor([True, False, True]))


def test_a_non_numeric_observation_names_the_site():
    with pytest.raises(TypeError, match="site 'x': the observed value must be .* got str 'abc'"):
        pyro.sample("x", dist.Normal(0.0, 1.0), obs="abc")
    with pytest.raises(TypeError, match="site 'x'"):
        poutine.trace(lambda: pyro.sample("x", dist.Normal(0.0, 1.0), obs="abc")).get_trace()
    with pytest.raises(TypeError, match="site 'x'"):
        poutine.condition(lambda: pyro.sample("x", dist.Normal(0.0, 1.0)), data={"x": "abc"})()


def test_predictive_names_bad_samples_and_counts():
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        return pyro.sample("x", dist.Normal(z, 1.0))

    with pytest.raises(ValueError, match=r"posterior_samples\['z'\] must be a tensor with a lead"):
        pyro.infer.Predictive(model, posterior_samples={"z": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="num_samples must be positive and an int, got 2.5"):
        pyro.infer.Predictive(model, num_samples=2.5)


# ---- param init outside the support: Pyro's rule --------------------------------------------


def test_simplex_param_initialised_as_pyroapi_does_matches_pyro(pyro_ref):
    """pyroapi's backend tests initialise a simplex param with ``exp(randn(3))``: Pyro accepts
    it, stores ``log`` of it unconstrained and reads back its normalised value."""
    init = torch.randn(3, generator=torch.Generator().manual_seed(0)).exp()
    expected = pyro_ref.param("p", init, constraint=constraints.simplex)
    got = pyro.param("p", init, constraint=constraints.simplex)
    assert torch.equal(got, expected)
    assert torch.equal(
        pyro.get_param_store().unconstrained("p"),
        pyro_ref.get_param_store().get_param("p").unconstrained(),
    )
    # The Constrained of deferred distributions follows the same rule (one shared helper).
    from miniprob.deferred import Constrained

    assert torch.equal(Constrained(init, constraints.simplex)(), expected)


def test_a_zero_in_a_simplex_init_is_refused_naming_the_parameter():
    with pytest.raises(ValueError, match="param 'p'.*unconstrained value is not finite"):
        pyro.param("p", torch.tensor([0.5, 0.5, 0.0]), constraint=constraints.simplex)
    assert "p" not in pyro.get_param_store()
    from miniprob.deferred import Constrained

    with pytest.raises(ValueError, match="Constrained.*not finite"):
        Constrained(torch.tensor([0.5, 0.5, 0.0]), constraints.simplex)


def test_flat_view_is_called_like_its_module():
    from miniprob.flat import FlatView

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    view = FlatView(net)
    x = torch.randn(5, 3)
    assert torch.equal(view(x), net(x))
    assert torch.equal(view(x, vector=torch.zeros_like(view.vector)), torch.zeros(5, 1))


# ---- black_box ------------------------------------------------------------------------------

_FORMULA = "math.sin(3 * x_) * math.exp(-x_) + math.cos(x_) ** 2"


def _formula(x):
    """The black box of the issue: a formula run by ``eval`` element by element, returned as
    ``torch.tensor`` of Python floats, so float32 whatever the input's dtype."""
    return torch.tensor([eval(_FORMULA, {"math": math, "x_": x_}) for x_ in x])


def _formula_grad(x):
    return (3 * torch.cos(3 * x) - torch.sin(3 * x)) * torch.exp(-x) - torch.sin(2 * x)


@pytest.mark.filterwarnings("ignore:black_box")
@pytest.mark.parametrize("method, tolerance", [("forward", 2e-3), ("central", 2e-4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_black_box_default_step_follows_the_precision_of_the_output(method, tolerance, dtype):
    from miniprob import black_box

    x0 = torch.linspace(0.3, 2.0, 7, dtype=torch.float64)
    x = x0.clone().to(dtype).requires_grad_()
    out = black_box(_formula, method=method)(x)
    assert _formula(x0).dtype == torch.float32
    out.sum().backward()
    exact = _formula_grad(x0)
    error = ((x.grad.double() - exact).norm() / exact.norm()).item()
    assert error < tolerance


def test_black_box_step_that_vanishes_against_an_input_names_it():
    from miniprob import black_box

    fn = black_box(lambda a, x: np.sin(x.numpy()) * a.numpy(), step=1e-20)
    a = torch.tensor(2.0, dtype=torch.float64)
    x = torch.tensor([0.5, 3.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r"step 1e-20 vanishes against argument 1 \('x'\)"):
        fn(a, x)
    coarse = black_box(_formula, method="central", step=1e-9)  # below float32's resolution
    with pytest.raises(ValueError, match=r"below the resolution .* argument 0 \('x'\)"):
        coarse(torch.tensor([0.5], dtype=torch.float64, requires_grad=True))


def test_black_box_float32_argument_warns_once():
    from miniprob import black_box

    fn = black_box(lambda x: np.sin(x.numpy()))
    x = torch.tensor([0.5], requires_grad=True)
    with pytest.warns(UserWarning, match="float64 and cast back") as record:
        for _ in range(3):
            fn(x).sum().backward()
    assert len([w for w in record if "cast back" in str(w.message)]) == 1
