"""What the ranks of tests/test_distributed.py run (a module of its own: spawned processes
import it, light and free of pytest), and the model they fit.

``launch`` starts ``world_size`` processes with torch.multiprocessing (spawn), each in a gloo
process group on 127.0.0.1, runs ``worker(rank, world_size, out, *args)`` in each, and returns
what each returned (or the error it raised); processes still alive after ``timeout`` seconds
are killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import miniprob as pyro
import miniprob.distributions as dist_
from miniprob.checkpoint import load_checkpoint, save_checkpoint
from miniprob.infer import SVI, Trace_ELBO
from miniprob.optim import Adam, DistributedOptimizer

N, D, BATCH = 64, 3, 8  # data points, features, batch per rank
STEPS, LATE = 8, 3  # steps; the step from which the guide reads a new parameter
LR = 0.05
PROCESS_GROUP_TIMEOUT = 30  # seconds


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, out, worker, args):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    result: dict = {}
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT),
        )
        result["value"] = worker(rank, world_size, out, *args)
    except BaseException as e:
        result["error"] = (type(e).__name__, str(e), traceback.format_exc())
    torch.save(result, Path(out) / f"rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(worker, out, *args, world_size=2, timeout=90.0):
    """Run ``worker`` on ``world_size`` spawned ranks; their results (``{"value": ...}`` or
    ``{"error": (type, message, traceback)}``), and the seconds it took."""
    ctx = mp.get_context("spawn")
    port = free_port()
    start = time.monotonic()
    procs = [
        ctx.Process(target=_entry, args=(rank, world_size, port, str(out), worker, args))
        for rank in range(world_size)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(max(0.0, timeout - (time.monotonic() - start)))
    finally:
        hung = [rank for rank, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    elapsed = time.monotonic() - start
    if hung:
        raise TimeoutError(f"ranks {hung} were still running after {timeout} s and were killed")
    results = []
    for rank, p in enumerate(procs):
        path = Path(out) / f"rank{rank}.pt"
        if not path.exists():
            raise RuntimeError(f"rank {rank} exited with code {p.exitcode} and wrote no result")
        results.append(torch.load(path, weights_only=False))
    return results, elapsed


def run_script(command, timeout, **kwargs):
    """``subprocess.run(command)`` in a session of its own, whose processes (torchrun's and
    Lightning's children too) are all killed if it outlives ``timeout`` seconds."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


# ---- the model ------------------------------------------------------------------------------


def dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(N, generator=g)
    return x, y


class Regression:
    """A linear regression: the weights are a network's (``pyro.module``), the noise scale a
    latent fitted by MAP (a ``Delta`` guide), and from step ``LATE`` on a bias latent whose
    guide parameter is created then. Every initial value is random: the ranks, seeded
    differently, start from different ones unless they are synchronized."""

    def __init__(self):
        self.net = nn.Linear(D, 1)

    def model(self, x, y, idx, late=False):
        pyro.module("net", self.net)
        sigma = pyro.sample("sigma", dist_.LogNormal(0.0, 1.0))
        bias = pyro.sample("bias", dist_.Normal(0.0, 1.0)) if late else 0.0
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("obs", dist_.Normal(self.net(x).squeeze(-1) + bias, sigma), obs=y)

    def guide(self, x, y, idx, late=False):
        s = pyro.param(
            "sigma_map", lambda: torch.rand(()) + 0.5, constraint=dist_.constraints.positive
        )
        pyro.sample("sigma", dist_.Delta(s))
        if late:
            pyro.sample("bias", dist_.Delta(pyro.param("bias_map", lambda: torch.randn(()))))


def shards(rank, world_size, steps):
    """The indices of each step's batch on ``rank``: a DataLoader over a DistributedSampler."""
    indices = TensorDataset(torch.arange(N))
    sampler = DistributedSampler(indices, num_replicas=world_size, rank=rank, seed=0)
    loader = DataLoader(indices, batch_size=BATCH, sampler=sampler)
    out, epoch = [], 0
    while len(out) < steps:
        sampler.set_epoch(epoch)
        out.extend(idx for (idx,) in loader)
        epoch += 1
    return out[:steps]


def union_batches(world_size, steps):
    """Each step's indices over all ranks: what one process sees in the same steps."""
    per_rank = [shards(r, world_size, steps) for r in range(world_size)]
    return [torch.cat(batch) for batch in zip(*per_rank, strict=True)]


def params():
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def step_all(step, batches, start=0):
    x, y = dataset()
    return [step(x[idx], y[idx], idx, late=start + t >= LATE) for t, idx in enumerate(batches)]


def single_process_svi(world_size, steps, seed=100):
    """SVI in one process over the union of the ranks' shards, from rank 0's initial values."""
    batches = union_batches(world_size, steps)  # before seeding: DataLoaders draw a seed
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    reg = Regression()
    svi = SVI(reg.model, reg.guide, Adam({"lr": LR}), Trace_ELBO())
    step_all(svi.step, batches)
    return params()


def single_process_module(world_size, steps, seed=100):
    """The ELBO module under plain torch.optim, in one process over the union of the shards."""
    batches = union_batches(world_size, steps)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    reg = Regression()
    loss_fn = Trace_ELBO()(reg.model, reg.guide)
    x, y = dataset()
    loss_fn(x[batches[0]], y[batches[0]], batches[0])  # creates the parameters
    opt = torch.optim.Adam(loss_fn.parameters(), lr=LR)
    for idx in batches:
        opt.zero_grad()
        loss_fn(x[idx], y[idx], idx).backward()
        opt.step()
    return params()


# ---- what the ranks run ---------------------------------------------------------------------


def healthy_run(rank, world_size, out):
    """SVI with a DistributedOptimizer (a parameter created late), a checkpoint and a resume,
    the ELBO module under DistributedDataParallel, then ranks that disagree on the model."""
    results = {}
    batches = shards(rank, world_size, 2 * STEPS)

    # Data-parallel SVI: the ranks start from different random values (their seeds differ).
    pyro.clear_param_store()
    pyro.set_rng_seed(100 + rank)
    reg = Regression()
    results["net_init"] = reg.net.weight.detach().clone()
    opt = DistributedOptimizer(Adam({"lr": LR}))
    svi = SVI(reg.model, reg.guide, opt, Trace_ELBO())
    step_all(svi.step, batches[:STEPS])
    results["svi"] = params()

    # Checkpoint (collective; rank 0 writes), go on; then resume from it in a fresh store.
    path = Path(out) / "run.ckpt"
    save_checkpoint(path, optim=opt)
    results["rng_after_save"] = torch.rand(3)
    step_all(svi.step, batches[STEPS:], start=STEPS)
    results["continued"] = params()
    pyro.clear_param_store()
    pyro.set_rng_seed(999)
    reg = Regression()
    opt = DistributedOptimizer(Adam({"lr": LR}))
    load_checkpoint(path, optim=opt, modules={"net": reg.net})
    results["rng_after_load"] = torch.rand(3)
    svi = SVI(reg.model, reg.guide, opt, Trace_ELBO())
    step_all(svi.step, batches[STEPS:], start=STEPS)
    results["resumed"] = params()

    # The ELBO module under DistributedDataParallel and plain torch.optim.
    pyro.clear_param_store()
    pyro.set_rng_seed(100 + rank)
    reg = Regression()
    loss_fn = Trace_ELBO()(reg.model, reg.guide)
    x, y = dataset()
    loss_fn(x[batches[0]], y[batches[0]], batches[0])  # creates the parameters
    ddp = DistributedDataParallel(loss_fn)
    torch_opt = torch.optim.Adam(ddp.parameters(), lr=LR)
    for idx in batches[:STEPS]:
        torch_opt.zero_grad()
        ddp(x[idx], y[idx], idx).backward()
        torch_opt.step()
    results["ddp"] = params()

    # Rank 1's guide reads a parameter that rank 0's does not.
    pyro.clear_param_store()
    reg = Regression()

    def guide(x, y, idx, late=False):
        reg.guide(x, y, idx)
        if rank == 1:
            pyro.param("extra", torch.zeros(2))

    svi = SVI(reg.model, guide, DistributedOptimizer(Adam({"lr": LR})), Trace_ELBO())
    try:
        step_all(svi.step, batches[:2])
    except Exception as e:
        results["mismatch"] = (type(e).__name__, str(e))

    # A process group of its own (``group=``): the default one is not used.
    pyro.clear_param_store()
    pyro.set_rng_seed(100 + rank)
    reg = Regression()
    group = dist.new_group([0, 1])
    svi = SVI(reg.model, reg.guide, DistributedOptimizer(Adam({"lr": LR}), group), Trace_ELBO())
    step_all(svi.step, batches[:2])
    results["group"] = params()

    # Collectives per step once every parameter has been broadcast.
    pyro.clear_param_store()
    reg = Regression()
    svi = SVI(reg.model, reg.guide, DistributedOptimizer(Adam({"lr": LR})), Trace_ELBO())
    early = lambda x, y, idx, late: svi.step(x, y, idx)  # noqa: E731 (no late parameter)
    step_all(early, batches[:2])
    calls = {"all_reduce": 0, "broadcast": 0}
    originals = {name: getattr(dist, name) for name in calls}

    def counting(name):
        def op(*args, **kwargs):
            calls[name] += 1
            return originals[name](*args, **kwargs)

        return op

    try:
        for name in calls:
            setattr(dist, name, counting(name))
        step_all(early, batches[2:5])
    finally:
        for name, op in originals.items():
            setattr(dist, name, op)
    results["collectives_in_3_steps"] = calls
    return results


def failing_run(rank, world_size, out):
    """Rank 1's model raises at step 2; rank 1's optimizer update raises at step 1; then (the
    group still usable) rank 1 dies at step 2 without a word."""
    results = {}
    batches = shards(rank, world_size, 4)
    pyro.clear_param_store()
    pyro.set_rng_seed(rank)
    reg = Regression()

    def model(x, y, idx, late=False, fail=False):
        if fail:
            raise ValueError(f"boom on rank {rank}")
        reg.model(x, y, idx)

    def guide(x, y, idx, late=False, fail=False):
        reg.guide(x, y, idx)

    svi = SVI(model, guide, DistributedOptimizer(Adam({"lr": LR})), Trace_ELBO())
    x, y = dataset()
    start = time.monotonic()
    try:
        for t, idx in enumerate(batches):
            svi.step(x[idx], y[idx], idx, fail=rank == 1 and t == 2)
    except Exception as e:
        results["raised"] = (type(e).__name__, str(e), time.monotonic() - start)

    # Rank 1's update raises at step 1 (after the gradients were averaged): rank 0 learns it
    # at its next step.
    class FailingAdam(Adam):
        fail = False

        def __call__(self, params, *args, **kwargs):
            if self.fail:
                raise FloatingPointError(f"update failed on rank {rank}")
            super().__call__(params, *args, **kwargs)

    pyro.clear_param_store()
    inner = FailingAdam({"lr": LR})
    svi_update = SVI(reg.model, reg.guide, DistributedOptimizer(inner), Trace_ELBO())
    try:
        for t, idx in enumerate(batches):
            inner.fail = rank == 1 and t == 1
            svi_update.step(x[idx], y[idx], idx)
    except Exception as e:
        results["update_raised"] = (type(e).__name__, str(e), t)

    start = time.monotonic()
    torch.save({"value": results}, Path(out) / f"rank{rank}.pt")  # what rank 1 leaves
    try:
        for t, idx in enumerate(batches):
            if rank == 1 and t == 2:
                os._exit(3)
            svi.step(x[idx], y[idx], idx)
    except Exception as e:
        results["died"] = (type(e).__name__, str(e), time.monotonic() - start)
    return results
