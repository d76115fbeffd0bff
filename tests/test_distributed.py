"""Data-parallel SVI (``DistributedOptimizer``), the ELBO as an ``nn.Module``, distributed
checkpoints and faults.

Two ranks run in spawned processes on 127.0.0.1 with the gloo backend (see
distributed_workers.py); each launch is killed if it outlives its timeout. Tolerance against
a single process over the union of the ranks' shards: 1e-5 (relative and absolute); the sums
are the same up to float32 rounding (each rank sums its half, the halves are averaged). The
ranks agree with each other bit for bit.
"""

import os
import sys
from pathlib import Path

import distributed_workers as workers
import pytest
import torch

import miniprob as pyro
import miniprob.distributions as d
from miniprob.checkpoint import load_checkpoint
from miniprob.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO
from miniprob.infer.elbo import ELBOModule
from miniprob.optim import Adam, DistributedOptimizer

TIMEOUT = 120.0  # seconds for a whole launch (process start-up included), then killed
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    out = tmp_path_factory.mktemp("healthy")
    results, _ = workers.launch(workers.healthy_run, out, timeout=TIMEOUT)
    for rank, result in enumerate(results):
        assert "error" in result or "value" in result
        assert "error" not in result, f"rank {rank}:\n{result['error'][2]}"
    return [r["value"] for r in results], out


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    out = tmp_path_factory.mktemp("failing")
    results, elapsed = workers.launch(workers.failing_run, out, timeout=TIMEOUT)
    return [r["value"] for r in results], elapsed


def assert_same(a, b, **tol):
    assert a.keys() == b.keys()
    for name in a:
        if tol:
            torch.testing.assert_close(a[name], b[name], **tol, msg=f"param '{name}'")
        else:
            assert torch.equal(a[name], b[name]), f"param '{name}': {a[name]} vs {b[name]}"


# ---- two ranks ------------------------------------------------------------------------------


def test_ranks_end_equal_to_each_other_and_to_one_process_over_the_union(healthy):
    (rank0, rank1), _ = healthy
    # The ranks started from different random values: the broadcast made them equal.
    assert not torch.equal(rank0["net_init"], rank1["net_init"])
    assert_same(rank0["svi"], rank1["svi"])
    expected = workers.single_process_svi(world_size=2, steps=workers.STEPS)
    assert_same(rank0["svi"], expected, **TOL)


def test_a_step_is_one_status_exchange_and_one_flat_gradient_all_reduce(healthy):
    ranks, _ = healthy
    for result in ranks:
        assert result["collectives_in_3_steps"] == {"all_reduce": 6, "broadcast": 0}


def test_a_distributed_optimizer_on_a_group_of_its_own(healthy):
    (rank0, rank1), _ = healthy
    assert_same(rank0["group"], rank1["group"])


def test_a_parameter_created_after_the_first_step_agrees(healthy):
    (rank0, rank1), _ = healthy
    # ``bias_map`` is first read at step LATE, from a random init that differs per rank.
    assert "bias_map" in rank0["svi"]
    assert torch.equal(rank0["svi"]["bias_map"], rank1["svi"]["bias_map"])


def test_a_checkpoint_resumes_on_every_rank_with_its_own_rngs(healthy):
    ranks, _ = healthy
    for result in ranks:
        assert_same(result["resumed"], result["continued"])
        assert torch.equal(result["rng_after_load"], result["rng_after_save"])
    assert not torch.equal(ranks[0]["rng_after_save"], ranks[1]["rng_after_save"])


def test_the_elbo_module_under_distributed_data_parallel(healthy):
    (rank0, rank1), _ = healthy
    assert_same(rank0["ddp"], rank1["ddp"])
    expected = workers.single_process_module(world_size=2, steps=workers.STEPS)
    assert_same(rank0["ddp"], expected, **TOL)


def test_ranks_reading_different_parameters_both_stop_naming_it(healthy):
    ranks, _ = healthy
    for result in ranks:
        kind, message = result["mismatch"]
        assert kind == "DistributedStepError"
        assert "'extra'" in message and "rank 0" in message and "rank 1" in message


def test_a_rank_that_raises_stops_every_rank_naming_it(failing):
    (rank0, rank1), elapsed = failing
    kind, message, _ = rank0["raised"]
    assert kind == "DistributedStepError"
    assert "rank 1 failed at step 2" in message and "ValueError: boom on rank 1" in message
    assert rank1["raised"][:2] == ("ValueError", "boom on rank 1")
    assert elapsed < TIMEOUT


def test_a_rank_whose_update_raises_stops_the_others_at_their_next_step(failing):
    (rank0, rank1), _ = failing
    assert rank1["update_raised"] == ("FloatingPointError", "update failed on rank 1", 1)
    kind, message, step = rank0["update_raised"]
    assert (kind, step) == ("DistributedStepError", 2)
    assert "rank 1 failed at step 1" in message and "update failed on rank 1" in message


def test_a_rank_that_dies_ends_the_others_with_an_error(failing):
    (rank0, _), _ = failing
    kind, message, seconds = rank0["died"]
    assert kind == "DistributedStepError"
    assert "lost contact" in message
    assert seconds < workers.PROCESS_GROUP_TIMEOUT


# ---- one process ----------------------------------------------------------------------------


def test_a_checkpoint_of_two_ranks_does_not_resume_on_one(healthy, group_of_one):
    _, out = healthy
    pyro.clear_param_store()
    with pytest.raises(ValueError, match="written by 2 ranks, but this run has 1"):
        load_checkpoint(out / "run.ckpt", optim=DistributedOptimizer(Adam({"lr": 0.1})))
    assert len(pyro.get_param_store()) == 0  # nothing loaded
    load_checkpoint(out / "run.ckpt")  # without the distributed optimizer: rank 0's RNGs
    assert "net$$$weight" in pyro.get_param_store()


def test_a_distributed_optimizer_needs_a_process_group_and_an_optimizer():
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedOptimizer(Adam({"lr": 0.1}))
    with pytest.raises(TypeError, match="miniprob.optim optimizer"):
        DistributedOptimizer(torch.optim.Adam)


def model(x):
    loc = pyro.sample("loc", d.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", d.Normal(loc, 1.0), obs=x)


def guide(x):
    m = pyro.param("m", torch.tensor(0.5))
    s = pyro.param("s", torch.tensor(0.7), constraint=d.constraints.positive)
    pyro.sample("loc", d.Normal(m, s))


X = torch.tensor([1.0, 2.5, 3.0, 1.5])


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO, JitTrace_ELBO])
def test_an_elbo_of_model_and_guide_is_a_module_and_with_arguments_a_loss(elbo):
    pyro.clear_param_store()
    loss_fn = elbo()(model, guide)
    assert isinstance(loss_fn, ELBOModule) and isinstance(loss_fn, torch.nn.Module)
    assert list(loss_fn.parameters()) == []  # created on the first call
    pyro.set_rng_seed(0)
    loss = loss_fn(X)
    assert loss.requires_grad
    store = pyro.get_param_store()
    assert dict(loss_fn.named_parameters()) == {
        "params.m": store.unconstrained("m"),
        "params.s": store.unconstrained("s"),
    }
    pyro.set_rng_seed(0)
    assert torch.equal(elbo()(model, guide, X), loss)  # the miniprob extension


def test_the_elbo_module_under_torch_optim_follows_svi():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(20):
        svi.step(X)
    expected = workers.params()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    loss_fn = Trace_ELBO()(model, guide)
    loss_fn(X).backward()  # the first call creates the parameters: step with its gradients
    opt = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
    opt.step()
    for _ in range(19):
        opt.zero_grad()
        loss_fn(X).backward()
        opt.step()
    assert_same(workers.params(), expected, rtol=1e-6, atol=1e-6)


def test_module_parameters_are_not_adopted_twice():
    """A model that is an nn.Module owns its network's parameters: the module lists each once,
    under the model's own name."""

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(1, 1)

        def forward(self, x):
            pyro.module("net", self.net)
            with pyro.plate("data", len(x)):
                pyro.sample("obs", d.Normal(self.net(x[:, None])[:, 0], 1.0), obs=x)

    pyro.clear_param_store()
    loss_fn = Trace_ELBO()(Model(), lambda x: pyro.param("unused", torch.zeros(1)))
    loss_fn(X)
    assert sorted(n for n, _ in loss_fn.named_parameters()) == [
        "model.net.bias",
        "model.net.weight",
        "params.unused",
    ]


# ---- the tutorial ---------------------------------------------------------------------------


def test_the_distributed_vae_tutorial_runs_in_fast_mode(tmp_path):
    """It launches torchrun with 1 and 2 processes and checks its claims (held-out ELBO, ranks
    equal, 1 and 2 processes within 5 nats)."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, MINIPROB_FAST="1", MINIPROB_OUT=str(tmp_path), GLOO_SOCKET_IFNAME="lo")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    script = root / "tutorials" / "distributed_vae.py"
    result = workers.run_script([sys.executable, str(script)], timeout=600, env=env)
    assert result.returncode == 0, (
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
    )
    assert (tmp_path / "distributed_vae_losses.png").exists()
    assert "steps/s" in result.stdout and "held-out ELBO" in result.stdout
