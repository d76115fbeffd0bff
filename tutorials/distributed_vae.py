# %% [markdown]
# # Data-parallel SVI: the digits VAE on several processes
#
# ```bash
# torchrun --standalone --nproc_per_node=2 tutorials/distributed_vae.py
# ```
#
# trains the VAE of [`vae_digits.py`](vae_digits.py) on two processes, each on half of every
# minibatch, and prints its steps per second and held-out ELBO. Run as a plain script (or a
# notebook), it launches `torchrun` itself, with 1 process and then with 2, and compares them.
# The same script runs on several machines: `torchrun --nnodes=2 --nproc_per_node=8
# --rdzv-endpoint=HOST:PORT ...` on each.
#
# What changes from a one-process training loop is small:
#
# - `torch.distributed.init_process_group()` joins the processes `torchrun` started (`gloo`
#   on CPU; `nccl` on GPU), with a `timeout` so that a process that dies cannot leave the
#   others waiting for long;
# - a `DataLoader` with a `DistributedSampler` gives each process (rank) its share of the
#   training images, and each step passes its batch's indices to
#   `plate("data", N, subsample=idx)`, so every rank's loss estimates the ELBO of all `N`
#   images;
# - `DistributedOptimizer(Adam(...))` averages the ranks' gradients before each update (one
#   all-reduce per step) and starts every parameter, including the networks'
#   `pyro.module` parameters created in the first step, from rank 0's value.
#
# Claims checked in every mode: each run improves the held-out ELBO per image by at least
# 50 nats over the untrained model; the ranks of the 2-process run end with bitwise equal
# parameters; and its held-out ELBO is within 5 nats of the 1-process run's (the same global
# batch of 128 images and the same number of steps: only the Monte Carlo noise differs).
# Steps per second are reported, not checked: they depend on the machine (see
# `benchmarks/distributed.py` for measurements and what limits them).
#
# Modes: `MINIPROB_FAST=1` runs 150 steps (CI); `MINIPROB_FAST=demo` 1000; unset, 3000.
# Figures and each run's results go to `MINIPROB_OUT` (default `tutorials/out/`).

# %%
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402

import miniprob as pyro  # noqa: E402
import miniprob.distributions as dist_  # noqa: E402
from miniprob.infer import SVI, Trace_ELBO  # noqa: E402
from miniprob.optim import Adam, DistributedOptimizer  # noqa: E402

MODE = os.environ.get("MINIPROB_FAST", "")
MODE = "full" if not MODE else "demo" if MODE == "demo" else "fast"
NUM_STEPS = {"fast": 150, "demo": 1000, "full": 3000}[MODE]
GLOBAL_BATCH = 128  # images per step, over all ranks
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
OUT = Path(os.environ.get("MINIPROB_OUT") or HERE / "out")
OUT.mkdir(parents=True, exist_ok=True)
UNDER_TORCHRUN = "TORCHELASTIC_RUN_ID" in os.environ
torch.set_num_threads(1)

# %% [markdown]
# ## Data, model and guide
#
# The data and the VAE are those of `vae_digits.py`. The one difference: model and guide take
# a batch `x` with its indices `idx` into the `size` training images, instead of drawing the
# indices themselves (each rank would draw the same ones).

# %%
digits = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)
x_train, x_test = train_test_split(digits, test_size=0.2, random_state=0)
N_train, N_test = len(x_train), len(x_test)
Z_DIM, HIDDEN = 4, 128


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, HIDDEN), nn.Softplus())
        self.loc = nn.Linear(HIDDEN, Z_DIM)
        self.scale = nn.Linear(HIDDEN, Z_DIM)

    def forward(self, x):
        h = self.body(x)
        return self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-4


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = nn.Sequential(nn.Linear(Z_DIM, HIDDEN), nn.Softplus(), nn.Linear(HIDDEN, 64))

    def model(self, x, idx, size):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", size, subsample=idx):
            z = pyro.sample("z", dist_.Normal(torch.zeros(Z_DIM), 1.0).to_event(1))
            pixels = dist_.ContinuousBernoulli(logits=self.decoder(z)).to_event(1)
            pyro.sample("x", pixels, obs=x)

    def guide(self, x, idx, size):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", size, subsample=idx):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist_.Normal(loc, scale).to_event(1))


def held_out_elbo(vae: VAE) -> float:
    """The ELBO per test image (nats), 10 draws of ``z`` per image, all test images at once."""
    with pyro.get_param_store().scope():
        loss = Trace_ELBO(num_particles=10).loss(
            vae.model, vae.guide, x_test, torch.arange(N_test), N_test
        )
    return -loss / N_test


# %% [markdown]
# ## What each rank runs
#
# Every rank builds its own VAE (with its own random initial weights: the
# `DistributedOptimizer` replaces them by rank 0's in the first step) and is seeded with its
# rank, so that the ranks draw independent `z` for their images. The `DistributedSampler`
# shuffles with a seed of its own, the same on every rank, and deals each rank a disjoint
# share; `set_epoch` reshuffles each epoch. Steps per second are timed after 10 warm-up steps.


# %%
def train_rank() -> dict:
    dist.init_process_group("gloo", timeout=timedelta(minutes=2))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    pyro.set_rng_seed(rank)
    train_set = TensorDataset(x_train, torch.arange(N_train))
    sampler = DistributedSampler(train_set, seed=0, drop_last=True)
    loader = DataLoader(train_set, batch_size=GLOBAL_BATCH // world_size, sampler=sampler)
    vae = VAE()
    optim = DistributedOptimizer(Adam({"lr": 5e-3}))
    svi = SVI(vae.model, vae.guide, optim, Trace_ELBO())
    losses, step, epoch, warm = [], 0, 0, 10
    while step < NUM_STEPS:
        sampler.set_epoch(epoch)
        for x, idx in loader:
            if step == warm:
                start = time.perf_counter()
            losses.append(svi.step(x, idx, N_train) / N_train)
            step += 1
            if step == NUM_STEPS:
                break
        epoch += 1
    steps_per_second = (NUM_STEPS - warm) / (time.perf_counter() - start)
    # Every rank's parameters, gathered to compare: they must be equal bit for bit.
    flat = torch.cat([p.detach().reshape(-1) for p in pyro.get_param_store().values()])
    everyone = [None] * world_size
    dist.all_gather_object(everyone, flat)
    result = {
        "world_size": world_size,
        "steps_per_second": steps_per_second,
        "images_per_second": steps_per_second * GLOBAL_BATCH,
        "held_out_elbo": held_out_elbo(vae),
        "untrained_elbo": held_out_elbo(VAE()),
        "ranks_equal": all(torch.equal(flat, other) for other in everyone),
        "losses": losses,
    }
    dist.barrier()  # leave together: a rank whose peer has gone can abort in gloo's teardown
    dist.destroy_process_group()
    return result


if UNDER_TORCHRUN:
    result = train_rank()
    if int(os.environ["RANK"]) == 0:
        print(
            f"{result['world_size']} process(es): {result['steps_per_second']:.1f} steps/s "
            f"({result['images_per_second']:.0f} images/s), held-out ELBO "
            f"{result['held_out_elbo']:.2f} nats per image (untrained "
            f"{result['untrained_elbo']:.2f}); ranks equal: {result['ranks_equal']}"
        )
        path = OUT / f"distributed_vae_{result['world_size']}.json"
        path.write_text(json.dumps(result))
    sys.exit(0)  # a rank ends here; what follows runs in the process that launches torchrun

# %% [markdown]
# ## 1 and 2 processes
#
# Launched from here, `torchrun` runs this file with 1 and then 2 processes, on this machine
# (`--standalone`; gloo on the loopback interface). Rank 0 of each run writes its results.


# %%
def launch(nproc: int) -> dict:
    env = dict(os.environ)
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on this machine
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", str(HERE / "distributed_vae.py")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {nproc} process(es) failed:\n{done.stderr[-4000:]}")
    print(done.stdout.strip().splitlines()[-1])
    return json.loads((OUT / f"distributed_vae_{nproc}.json").read_text())


runs = {nproc: launch(nproc) for nproc in (1, 2)}

# %% [markdown]
# ## Results
#
# Both runs see the same 128 images per step. The two-process run computes each step in two
# halves at once, then adds one all-reduce of the gradients (about 110,000 numbers here): on a
# model this small, the step's fixed costs (Python, the handler stack, the collective's
# latency) are a large share of it, so two processes go less than twice as fast.

# %%
MARGIN = 50.0
for nproc, run in runs.items():
    print(
        f"{nproc} process(es): {run['steps_per_second']:7.1f} steps/s, "
        f"held-out ELBO {run['held_out_elbo']:8.2f} nats per image "
        f"(untrained {run['untrained_elbo']:.2f})"
    )
    assert run["held_out_elbo"] > run["untrained_elbo"] + MARGIN, nproc
assert runs[2]["ranks_equal"]
assert abs(runs[2]["held_out_elbo"] - runs[1]["held_out_elbo"]) < 5.0
speedup = runs[2]["steps_per_second"] / runs[1]["steps_per_second"]
print(f"speed-up with 2 processes: {speedup:.2f} (scaling efficiency {speedup / 2:.0%})")

fig, ax = plt.subplots(figsize=(6, 3.5))
for nproc, run in runs.items():
    ax.plot(run["losses"], label=f"{nproc} process(es), rank 0", alpha=0.7)
ax.set(
    xlabel="step",
    ylabel="loss per training image (nats)",
    title="Training loss: the same global batch, split over ranks",
    ylim=(-runs[1]["held_out_elbo"] - 30, -runs[1]["untrained_elbo"] + 10),
)
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "distributed_vae_losses.png")
plt.close(fig)
print(f"figure saved to {OUT / 'distributed_vae_losses.png'}")
