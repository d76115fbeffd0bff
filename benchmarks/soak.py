"""Soak test: many SVI steps of a small model, watching memory and speed.

Runs ``--steps`` (default 100,000) steps of a small model with everything a long run exercises:
a constrained parameter, a subsampled plate, an ``nn.Module`` registered with ``pyro.module``,
a non-reparameterized (score-function) latent next to reparameterized ones, validation on, and
Adam with a learning-rate scheduler. Every ``--every`` steps it prints the resident set size
(RSS), the number of live tensors, the mean ms/step of that interval and its best ms/step (the
fastest block of 1,000 steps: on a shared machine the mean moves with other processes' load,
the best much less); at the end it reports the growth of RSS after warm-up and the ratio of
the last interval's best ms/step to the first's. Exit status 1 if memory grew by more than
``--max-growth-mib`` or that ratio exceeds ``--max-slowdown``.

Usage::

    python benchmarks/soak.py                     # 100,000 steps, a few minutes
    python benchmarks/soak.py --steps 5000 --every 500
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import miniprob as pyro  # noqa: E402
import miniprob.distributions as dist  # noqa: E402
from miniprob.distributions import constraints  # noqa: E402
from miniprob.infer import SVI, Trace_ELBO  # noqa: E402
from miniprob.optim import StepLR  # noqa: E402


def rss_mib() -> float:
    """The current resident set size in MiB (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def live_tensors() -> int:
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def build(n_data: int = 200, batch: int = 32):
    torch.manual_seed(0)
    x = torch.randn(n_data, 3)
    y = (x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(n_data) > 0).float()
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def model(x, y):
        pyro.module("net", net)
        noise = pyro.sample("noise", dist.LogNormal(0.0, 1.0))
        switch = pyro.sample("switch", dist.Bernoulli(0.5))
        with pyro.plate("data", len(x), subsample_size=batch) as idx:
            logits = net(x[idx]).squeeze(-1) / noise + 0.1 * switch
            pyro.sample("y", dist.Bernoulli(logits=logits), obs=y[idx])

    def guide(x, y):
        loc = pyro.param("noise_loc", torch.tensor(0.0))
        scale = pyro.param("noise_scale", torch.tensor(0.5), constraint=constraints.positive)
        pyro.sample("noise", dist.LogNormal(loc, scale))
        p = pyro.param("switch_p", torch.tensor(0.5), constraint=constraints.unit_interval)
        pyro.sample("switch", dist.Bernoulli(p))

    return model, guide, (x, y)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=2_000, help="steps before the RSS baseline")
    parser.add_argument("--max-growth-mib", type=float, default=20.0)
    parser.add_argument("--max-slowdown", type=float, default=1.5)
    args = parser.parse_args()

    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    model, guide, data = build()
    adam = {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.01}}
    sched = StepLR({**adam, "step_size": 10_000, "gamma": 0.9})
    svi = SVI(model, guide, sched, Trace_ELBO())

    for _ in range(args.warmup):
        svi.step(*data)
    gc.collect()
    base_rss, base_tensors = rss_mib(), live_tensors()
    print(f"torch {torch.__version__}, {args.steps} steps after {args.warmup} warm-up steps")
    print(f"baseline: RSS {base_rss:.1f} MiB, {base_tensors} live tensors")
    header = f"{'steps':>8} {'ms/step':>8} {'best':>7} {'RSS MiB':>9} {'growth':>8} {'tensors':>8}"
    print(header + f" {'loss':>9}")

    intervals = []
    loss_sum, done, best = 0.0, 0, float("inf")
    start = block_start = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss_sum += svi.step(*data)
        if step % 1000 == 0:
            sched.step()
            now = time.perf_counter()
            best = min(best, (now - block_start) * 1e3 / 1000)  # ms/step of 1,000 steps
            block_start = now
        if step % args.every == 0 or step == args.steps:
            elapsed = time.perf_counter() - start
            n = step - done
            ms = 1000 * elapsed / n
            gc.collect()
            rss = rss_mib()
            intervals.append((step, ms, best, rss))
            print(
                f"{step:>8} {ms:>8.3f} {best:>7.3f} {rss:>9.1f} {rss - base_rss:>+8.1f} "
                f"{live_tensors():>8} {loss_sum / n:>9.3f}",
                flush=True,
            )
            loss_sum, done, best = 0.0, step, float("inf")
            start = block_start = time.perf_counter()

    growth = max(r for *_, r in intervals) - base_rss
    slowdown = intervals[-1][2] / intervals[0][2]
    print(
        f"RSS growth after warm-up: {growth:+.1f} MiB (max over intervals); "
        f"best ms/step, last interval / first: {slowdown:.3f}"
    )
    ok = growth <= args.max_growth_mib and slowdown <= args.max_slowdown
    print("OK" if ok else "FAILED: memory grew or steps slowed down")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
