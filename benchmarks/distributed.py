"""Data-parallel SVI throughput: the ``vae`` benchmark model on 1 and 2 processes.

Usage::

    python benchmarks/distributed.py            # 3 rounds of 300 timed steps per setting
    python benchmarks/distributed.py --quick    # 1 round of 100

Each setting runs in freshly spawned processes (torch.multiprocessing, gloo on 127.0.0.1, one
torch thread per process), alternating 1 and 2 processes round after round so that drifts of
the machine hit both alike. Settings, all with ``Trace_ELBO`` and ``Adam``:

- 1 process, plain ``Adam`` (no process group): the reference;
- 1 process, ``DistributedOptimizer(Adam)``: what the wrapper costs when there is nobody to
  talk to (its exchange and all-reduce in a group of one);
- 2 processes, the same global batch of 128 split 64 + 64 (strong scaling: steps per second);
- 2 processes, 128 images each (weak scaling: images per second).

Steps are timed in blocks of 50; reported is the fastest block of all rounds (on a shared
machine, the one least disturbed by other jobs), with the median beside it.

Also measured, in the 2-process group: the time of one step's communication alone (the
status exchange and the gradient all-reduce, as many numbers as the VAE has). Results go to
``distributed.json`` and to a section of ``RESULTS.md`` (``run.py`` keeps the section when it
rewrites the file).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models  # noqa: E402

import miniprob as pyro  # noqa: E402
from miniprob.infer import SVI, Trace_ELBO  # noqa: E402
from miniprob.optim import Adam, DistributedOptimizer  # noqa: E402
from miniprob.optim.distributed import _STEP, _free_port  # noqa: E402

GLOBAL_BATCH = 128
BLOCK = 50  # steps timed together
SECTION = "## Data-parallel SVI (`benchmarks/distributed.py`)"


def _vae(encoder, decoder, size):
    dist_ = pyro.distributions

    def model(x, idx):
        pyro.module("decoder", decoder)
        with pyro.plate("data", size, subsample=idx):
            z = pyro.sample("z", dist_.Normal(torch.zeros(models.Z_DIM), 1.0).to_event(1))
            pyro.sample("x", dist_.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x, idx):
        pyro.module("encoder", encoder)
        with pyro.plate("data", size, subsample=idx):
            loc, scale = encoder(x)
            pyro.sample("z", dist_.Normal(loc, scale).to_event(1))

    return model, guide


def _time_steps(distributed: bool, batch: int, warmup: int, steps: int) -> list[float]:
    """Seconds per step of SVI on this rank's batches, per block of ``BLOCK`` steps (after
    ``warmup`` steps)."""
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    data = models.digits()
    pyro.clear_param_store()
    pyro.set_rng_seed(rank)
    model, guide = _vae(*models.vae_networks(), len(data))
    optim = DistributedOptimizer(Adam({"lr": 0.01})) if distributed else Adam({"lr": 0.01})
    svi = SVI(model, guide, optim, Trace_ELBO())
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randperm(len(data), generator=g)[: batch * world][rank::world]
        for _ in range(warmup + steps)
    ]
    for idx in batches[:warmup]:
        svi.step(data[idx], idx)
    times = []
    for block in range(0, steps, BLOCK):
        if distributed:
            dist.barrier()
        start = time.perf_counter()
        for idx in batches[warmup + block : warmup + block + BLOCK]:
            svi.step(data[idx], idx)
        times.append((time.perf_counter() - start) / BLOCK)
    return times


def _time_communication(reps: int) -> list[float]:
    """Seconds of one step's communication alone: the exchange and the gradient all-reduce."""
    optim = DistributedOptimizer(Adam({"lr": 0.01}))
    numel = sum(p.numel() for net in models.vae_networks() for p in net.parameters())
    flat = torch.zeros(numel + 10)  # the gradients and one has-gradient flag per tensor
    times = []
    for _ in range(0, reps, BLOCK):
        dist.barrier()
        start = time.perf_counter()
        for _ in range(BLOCK):
            optim._exchange(_STEP, 0, numel, lambda: ([], []))
            dist.all_reduce(flat)
        times.append((time.perf_counter() - start) / BLOCK)
    return times


def _rank(rank, world, port, out, settings, warmup, steps):
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    results = {}
    if world == 1:
        results["plain"] = _time_steps(False, GLOBAL_BATCH, warmup, steps)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(minutes=2),
    )
    for name, batch in settings:
        results[name] = _time_steps(True, batch, warmup, steps)
    if world > 1:
        results["communication"] = _time_communication(steps)
    if rank == 0:
        torch.save(results, Path(out) / "result.pt")
    dist.barrier()  # leave together: a rank whose peer has gone can abort in gloo's teardown
    dist.destroy_process_group()


def _spawn(world: int, settings: list, warmup: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        args = (world, _free_port(), out, settings, warmup, steps)
        mp.start_processes(_rank, args=args, nprocs=world, start_method="spawn")
        return torch.load(Path(out) / "result.pt")


def measure(rounds: int, warmup: int, steps: int) -> dict:
    one = {"plain": [], "distributed": []}
    two = {"strong": [], "weak": [], "communication": []}
    for r in range(rounds):
        for k, v in _spawn(1, [("distributed", GLOBAL_BATCH)], warmup, steps).items():
            one[k].extend(v)
        settings = [("strong", GLOBAL_BATCH // 2), ("weak", GLOBAL_BATCH)]
        for k, v in _spawn(2, settings, warmup, steps).items():
            two[k].extend(v)
        print(
            f"round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {min(v) * 1e3:.3f} ms" for k, v in {**one, **two}.items()),
            flush=True,
        )
    # The fastest block: on a shared machine, the one least disturbed by other jobs.
    ms = {k: min(v) * 1e3 for k, v in {**one, **two}.items()}
    median = {k: statistics.median(v) * 1e3 for k, v in {**one, **two}.items()}
    strong_speedup = ms["distributed"] / ms["strong"]
    weak_speedup = 2 * ms["distributed"] / ms["weak"]
    return {
        "machine": {"cores": os.cpu_count(), "torch": torch.__version__},
        "load_average": os.getloadavg()[0],
        "rounds": rounds,
        "steps": steps,
        "ms_per_step": ms,
        "median_ms_per_step": median,
        "steps_per_second": {k: 1e3 / v for k, v in ms.items() if k != "communication"},
        "strong": {"speedup": strong_speedup, "efficiency": strong_speedup / 2},
        "weak": {"speedup": weak_speedup, "efficiency": weak_speedup / 2},
        "wrapper_overhead_ms": ms["distributed"] - ms["plain"],
    }


def section(results: dict) -> str:
    ms, sps = results["ms_per_step"], results["steps_per_second"]
    strong, weak = results["strong"], results["weak"]
    median = results["median_ms_per_step"]
    settings = [
        ("1 process, `Adam`", "128", "plain", 128),
        ("1 process, `DistributedOptimizer(Adam)`", "128", "distributed", 128),
        ("2 processes, strong scaling", "64 + 64", "strong", 128),
        ("2 processes, weak scaling", "128 + 128", "weak", 256),
    ]
    rows = [
        f"| {name} | {label} | {ms[k]:.3f} | {median[k]:.3f} | {sps[k]:.1f} "
        f"| {images * sps[k]:.0f} |"
        for name, label, k, images in settings
    ]
    lines = [
        SECTION,
        "",
        f"The `vae` model (hidden 128, z = 10, Bernoulli pixels) with `Trace_ELBO` and Adam, "
        f"{results['steps']} timed steps per setting and round, {results['rounds']} rounds "
        f"alternating 1 and 2 processes (spawned, gloo on 127.0.0.1, 1 torch thread each), on "
        f"{results['machine']['cores']} cores; the fastest block of {BLOCK} steps (steps/s and "
        f"images/s from it) and the median (load average {results['load_average']:.1f} at "
        "the end: other jobs shared the cores). Command: `python benchmarks/distributed.py`.",
        "",
        "| setting | images per step | ms per step | median ms | steps/s | images/s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Scaling efficiency at 2 processes: strong (same global batch) {strong['efficiency']:.0%} "
        f"(speed-up {strong['speedup']:.2f}), weak (same batch per process) "
        f"{weak['efficiency']:.0%} (speed-up in images/s {weak['speedup']:.2f}). In a group "
        "of one the wrapper only steps the optimizer (difference: "
        f"{results['wrapper_overhead_ms']:.3f} ms per step, noise); one step's "
        f"communication alone (the status exchange and the all-reduce of the ~12,000 "
        f"gradient numbers) takes {ms['communication']:.3f} ms at 2 processes.",
        "",
        f"What limits it: a step of this model takes {ms['plain']:.1f} ms here, most of it "
        "fixed cost (Python, the handler stack, small-tensor ops, the optimizer) that does not "
        "shrink when the batch is halved, so strong scaling gains little; each step adds two "
        f"loopback round trips (exchange and all-reduce: {ms['communication']:.1f} ms), which "
        "wait for the slower rank; and with 2 processes on 2 cores, anything else that runs (the "
        "other jobs on the machine) takes a core from a rank and stalls both. Weak scaling does "
        "better: the fixed cost is paid once per 128 images on each core."
        + (
            f" The machine was oversubscribed during this run (load {results['load_average']:.1f} "
            f"on {results['machine']['cores']} cores): these figures measure that contention as "
            "much as the code; rerun on an idle machine for the code's own."
            if results["load_average"] > results["machine"]["cores"]
            else ""
        ),
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace (or add) this benchmark's section at the end of ``path``."""
    old = path.read_text() if path.exists() else ""
    kept = old.split("\n" + SECTION)[0].rstrip("\n")
    path.write_text(kept + "\n\n" + text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--out", default=str(HERE), help="folder for distributed.json and RESULTS.md"
    )
    args = parser.parse_args(argv)
    rounds, steps = (1, 100) if args.quick else (3, 300)
    results = measure(rounds, warmup=20, steps=steps)
    out = Path(args.out)
    (out / "distributed.json").write_text(json.dumps(results, indent=2) + "\n")
    write_section(out / "RESULTS.md", section(results))
    print(section(results))


if __name__ == "__main__":
    main()
