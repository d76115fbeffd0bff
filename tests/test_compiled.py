"""SVI(compile=True): the whole step captured and compiled; fallback, recompilation, resuming.

TorchInductor's first compile of a program takes seconds, so the tests that need its kernels
are few and small; the plumbing (signatures, optimizers, fallback, checkpoints) is checked on
the ``"aten"`` backend, which runs the same captured program without compiling it.
"""

import gc
import math
import os
import warnings

import pytest
import torch

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.checkpoint import load_checkpoint, save_checkpoint
from miniprob.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO
from miniprob.infer.compiled import CompileWarning
from miniprob.optim import SGD, Adam, ClippedAdam, ExponentialLR

DATA = 3.0 + torch.randn(100, generator=torch.Generator().manual_seed(0))


def tiny_model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def tiny_guide(data):
    m = pyro.param("m", torch.tensor(0.0))
    s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
    pyro.sample("loc", dist.Normal(m, s))


def tiny_posterior(data):
    precision = 1 / 10.0**2 + len(data)
    return data.sum().item() / precision, precision**-0.5


def map_model(data):
    # No draws: the loss is a function of the parameters alone, so eager and compiled steps
    # can be compared value for value.
    loc = pyro.param("loc", torch.zeros(2))
    scale = pyro.param("scale", torch.ones(2), constraint=dist.constraints.positive)
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, scale).to_event(1), obs=data)


def map_guide(data):
    pass


MAP_DATA = torch.randn(30, 2, generator=torch.Generator().manual_seed(1)) * 2.0 + 1.0


def train(optim, steps, compile, model=map_model, guide=map_guide, data=MAP_DATA, elbo=None):
    pyro.clear_param_store()
    svi = SVI(model, guide, optim, elbo or Trace_ELBO(), compile=compile)
    losses = [svi.step(data) for _ in range(steps)]
    store = pyro.get_param_store()
    return svi, losses, {k: store[k].detach().clone() for k in store.keys()}


def test_compiled_step_gives_the_eager_losses_on_the_same_draws():
    optim = lambda: Adam({"lr": 0.05}, clip_args={"clip_norm": 5.0})  # noqa: E731
    _, eager, eager_params = train(optim(), 15, False)
    svi, compiled, compiled_params = train(optim(), 15, True)
    assert len(svi._compiled.compile_seconds) == 1
    assert compiled == pytest.approx(eager, rel=1e-5)
    for name in eager_params:
        torch.testing.assert_close(compiled_params[name], eager_params[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "optim",
    [
        lambda: Adam(lambda name: {"lr": 0.1 if name == "loc" else 0.02, "weight_decay": 0.01}),
        lambda: Adam({"lr": 0.05}, clip_args={"clip_value": 0.5}),
        lambda: ClippedAdam({"lr": 0.05, "clip_norm": 1.0, "lrd": 0.99}),
        lambda: ExponentialLR(
            {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.05}, "gamma": 0.8}
        ),
        lambda: SGD({"lr": 0.01, "momentum": 0.9}),  # not fused: gradients compiled, SGD eager
    ],
    ids=["per-param", "clip-value", "clipped-adam", "scheduler", "sgd"],
)
def test_optimizers_in_the_program_match_eager(optim):
    def run(compile):
        pyro.clear_param_store()
        opt = optim()
        svi = SVI(map_model, map_guide, opt, Trace_ELBO(), compile=compile)
        losses = []
        for _ in range(4):
            losses += [svi.step(MAP_DATA) for _ in range(3)]
            if hasattr(opt, "step"):
                opt.step()  # the scheduler's epoch: the rate is an input of the program
        store = pyro.get_param_store()
        return losses, {k: store[k].detach().clone() for k in store.keys()}, opt.get_state()

    eager, compiled = run(False), run("aten")
    assert compiled[0] == pytest.approx(eager[0], rel=1e-5)
    for name in eager[1]:
        torch.testing.assert_close(compiled[1][name], eager[1][name], rtol=1e-5, atol=1e-6)
    for name, state in eager[2].items():
        assert compiled[2][name]["param_groups"] == state["param_groups"]


def test_compiled_training_reaches_the_conjugate_posterior_and_is_reproducible():
    def fit(compile, seed=0):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        svi = SVI(tiny_model, tiny_guide, Adam({"lr": 0.05}), Trace_ELBO(), compile=compile)
        losses, trail = [], []
        for i in range(1500):
            losses.append(svi.step(DATA))
            if i >= 1000:  # the iterates' average over the last 500 steps
                trail.append([pyro.param("m").item(), pyro.param("s").item()])
        return losses, torch.tensor(trail).mean(0)

    losses, (m, s) = fit(True)
    mean, sd = tiny_posterior(DATA)
    assert m.item() == pytest.approx(mean, abs=0.03)
    assert s.item() == pytest.approx(sd, rel=0.2)
    _, (m_eager, s_eager) = fit(False)  # the same posterior as eager, other draws
    assert m.item() == pytest.approx(m_eager.item(), abs=0.03)
    assert s.item() == pytest.approx(s_eager.item(), rel=0.2)
    assert fit(True)[0] == losses  # one seed, one run


def test_compiled_linreg_reaches_the_conjugate_posterior_mean():
    # Known noise scale: w | data is Normal with a closed-form mean.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.5 * torch.randn(200, generator=g)

    def model(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        with pyro.plate("data", len(y)):
            pyro.sample("obs", dist.Normal(x @ w, 0.5), obs=y)

    def guide(x, y):
        loc = pyro.param("w_loc", torch.zeros(3))
        scale = pyro.param("w_scale", 0.1 * torch.ones(3), constraint=dist.constraints.positive)
        pyro.sample("w", dist.Normal(loc, scale).to_event(1))

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, Adam({"lr": 0.02}), TraceMeanField_ELBO(), compile=True)
    for _ in range(1500):
        svi.step(x, y)
    precision = torch.eye(3) + x.T @ x / 0.25
    mean = torch.linalg.solve(precision, x.T @ y / 0.25)
    torch.testing.assert_close(pyro.param("w_loc").detach(), mean, atol=0.03, rtol=0)


def test_a_new_batch_shape_compiles_again_and_programs_are_bounded():
    pyro.clear_param_store()
    svi = SVI(tiny_model, tiny_guide, Adam({"lr": 0.05}), Trace_ELBO(), compile="aten")
    svi._compiled.MAX_PROGRAMS = 2
    for batch in (DATA[:10], DATA[:10], DATA[:7], DATA[:7], DATA[:10]):
        svi.step(batch)
    assert len(svi._compiled.compile_seconds) == 2  # 10, then 7; 10 again is kept
    svi.step(DATA[:5])  # a third program: the one for 7 (least recently used) goes
    assert len(svi._compiled._programs) == 2
    svi.step(DATA[:10])
    assert len(svi._compiled.compile_seconds) == 3
    svi.step(DATA[:7])
    assert len(svi._compiled.compile_seconds) == 4


def test_value_dependent_control_flow_falls_back_to_eager_with_a_warning():
    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        scale = 1.0 if loc.item() > 0 else 2.0  # Python branching on a draw
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, scale), obs=data)

    pyro.set_rng_seed(0)
    _, eager, _ = train(Adam({"lr": 0.05}), 4, False, model, tiny_guide, DATA)
    pyro.set_rng_seed(0)
    with pytest.warns(CompileWarning, match="runs eagerly.*value.*test_compiled.py"):
        _, compiled, _ = train(Adam({"lr": 0.05}), 4, True, model, tiny_guide, DATA)
    assert compiled == eager  # every step eager: the same draws, the same numbers


def test_networks_particles_and_subsampling_are_captured():
    net = torch.nn.Linear(2, 1)

    def model(x, y):
        pyro.module("net", net)
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y), subsample_size=8) as idx:
            pyro.sample("obs", dist.Normal(net(x[idx]).squeeze(-1) * w, 1.0), obs=y[idx])

    def guide(x, y):
        pyro.sample("w", dist.Normal(pyro.param("w_loc", torch.tensor(1.0)), 0.1))

    x, y = torch.randn(20, 2), torch.randn(20)
    pyro.clear_param_store()
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, Adam({"lr": 0.01}), elbo, compile="aten")
    weight = net.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        for _ in range(5):
            assert math.isfinite(svi.step(x, y))
    assert len(svi._compiled._programs) == 1
    assert not torch.equal(net.weight.detach(), weight)  # the network trains in the program


def test_checkpoint_save_and_resume_in_compiled_mode(tmp_path):
    path = os.fspath(tmp_path / "run.ckpt")
    pyro.clear_param_store()
    optim = Adam({"lr": 0.05})
    svi = SVI(map_model, map_guide, optim, Trace_ELBO(), compile="aten")
    for _ in range(6):
        svi.step(MAP_DATA)
    save_checkpoint(path, optim=optim)
    straight = [svi.step(MAP_DATA) for _ in range(6)]
    final = pyro.param("loc").detach().clone()

    pyro.clear_param_store()
    optim = Adam({"lr": 0.05})
    load_checkpoint(path, optim=optim)
    svi = SVI(map_model, map_guide, optim, Trace_ELBO(), compile="aten")
    resumed = [svi.step(MAP_DATA) for _ in range(6)]
    assert resumed == pytest.approx(straight, rel=1e-6)
    torch.testing.assert_close(pyro.param("loc").detach(), final)
    step = optim.get_state()["loc"]["state"][0]["step"]
    assert float(step) == 12  # the program moved the checkpointed state on


def test_a_nonfinite_loss_raises_and_changes_nothing():
    pyro.clear_param_store()
    svi = SVI(map_model, map_guide, Adam({"lr": 0.05}), Trace_ELBO(), compile="aten")
    svi.step(MAP_DATA)
    svi.step(MAP_DATA)
    before = pyro.param("scale").detach().clone()
    bad = MAP_DATA.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="obs"):
        svi.step(bad)
    with pytest.raises(ValueError, match="obs"):
        svi.step(bad)  # now compiled: the program's update is not kept either
    torch.testing.assert_close(pyro.param("scale").detach(), before)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_jit_trace_elbo_memory_is_bounded_over_new_shapes():
    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    def guide(data):
        pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    pyro.clear_param_store()
    elbo = JitTrace_ELBO()
    elbo.MAX_GRAPHS = 4
    svi = SVI(model, guide, Adam({"lr": 0.01}), elbo)
    rss = []
    for n in range(1, 51):
        svi.step(torch.ones(n))
        if n in (10, 50):
            gc.collect()
            rss.append(_rss_mb())
    assert len(elbo.compile_seconds) == 50 and len(elbo._graphs) == 4
    assert rss[1] - rss[0] < 8  # the old torch.jit path kept 6-16 MB per shape


@pytest.mark.parametrize(
    "loss",
    [
        lambda model, guide, data: Trace_ELBO().differentiable_loss(model, guide, data),
        JitTrace_ELBO(),
    ],
    ids=["callable", "jit-trace-elbo"],
)
def test_custom_losses_and_jit_elbos_are_captured_whole(loss):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(tiny_model, tiny_guide, Adam({"lr": 0.05}), loss, compile="aten")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        for _ in range(300):
            svi.step(DATA)
    assert [p.fused for p in svi._compiled._programs.values()] == [True]
    assert pyro.param("m").item() == pytest.approx(tiny_posterior(DATA)[0], abs=0.2)


def test_a_buffer_written_in_place_falls_back_to_eager():
    norm = torch.nn.BatchNorm1d(1)

    def model(data):
        pyro.module("norm", norm)
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(norm(data[:, None])[:, 0] * 0 + loc, 1.0), obs=data)

    pyro.clear_param_store()
    svi = SVI(model, tiny_guide, Adam({"lr": 0.05}), Trace_ELBO(), compile="aten")
    with pytest.warns(CompileWarning, match="in place"):
        svi.step(DATA)
    svi.step(DATA)
    assert norm.num_batches_tracked.item() == 2  # both steps eager: the statistics moved


def test_isa_probes_are_skipped_then_retried_and_leave_inductor_config_alone(monkeypatch):
    # The compile trusts the CPU's vector ISA flags; if a kernel build fails under that
    # trust it compiles again with TorchInductor's own probes, and the setting stays ours.
    import torch._inductor.compile_fx as inductor_compile
    from torch._inductor import config, cpu_vec_isa
    from torch._inductor.fx_passes import joint_graph

    real = inductor_compile.compile_fx
    own_list = cpu_vec_isa.valid_vec_isa_list
    own_init = joint_graph.lazy_init
    seen = []

    def failing_when_trusted(graph, fakes):
        seen.append(config.cpp.vec_isa_ok)
        assert config.cpp_wrapper  # one source file per program
        assert not config.pattern_matcher and joint_graph.lazy_init is not own_init
        if config.cpp.vec_isa_ok:
            if "avx2" in cpu_vec_isa.x86_isa_checker():  # AVX2, no probe builds
                assert [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()] == ["avx2"]
                assert config.cpp.simdlen == 256
            raise RuntimeError("kernel build failed")
        return real(graph, fakes)

    monkeypatch.setattr(inductor_compile, "compile_fx", failing_when_trusted)
    before = config.cpp.vec_isa_ok
    _, eager, _ = train(Adam({"lr": 0.05}), 3, compile=False)
    _, compiled, _ = train(Adam({"lr": 0.05}), 3, compile=True)
    assert seen == [True, before]
    assert config.cpp.vec_isa_ok == before
    assert cpu_vec_isa.valid_vec_isa_list is own_list and joint_graph.lazy_init is own_init
    assert not config.cpp_wrapper and config.cpp.simdlen is None and config.pattern_matcher
    assert compiled == pytest.approx(eager, rel=1e-5)
