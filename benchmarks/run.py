"""The SVI-step benchmark: miniprob vs Pyro vs a hand-written PyTorch floor.

Usage::

    python benchmarks/run.py            # the full suite, about 6 minutes on 2 cores
    python benchmarks/run.py --quick    # fewer rounds, smaller per-site sweep, shorter memory run
    python benchmarks/run.py --only tiny,vae --skip-memory

Each model (see ``models.py``) is run by every implementation in the same process, interleaved:
after a warm-up, each round times one block of steps per implementation (A B C A B C ...), so
slow drifts of the machine hit all of them alike. Reported per model: the median ms/step of each
implementation and the medians of the paired per-round ratios. Also: the cost per site (slope
of step time against the number of sites K), the compile time of ``JitTrace_ELBO``, and memory
over many ``vae`` steps. Results go to ``results.json`` and ``RESULTS.md`` beside this file.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import autoguide_models  # noqa: E402
import enum_bench  # noqa: E402
import models  # noqa: E402

import miniprob  # noqa: E402
from miniprob.params import _CURRENT as _CURRENT_STORE  # noqa: E402

models.BENCHMARKS.update(autoguide_models.BENCHMARKS)

try:
    import pyro
except ImportError:  # the suite still runs miniprob against the floor
    pyro = None

TORCH_THREADS = 1
CLOCK = time.process_time


# ---- building steps ----------------------------------------------------------------------
def svi_step(lib, name: str, jit: bool = False) -> Callable[[], float]:
    """``svi.step`` of ``name`` under ``lib`` (miniprob or pyro), in a fresh param store."""
    build, kwargs, _ = models.BENCHMARKS[name]
    problem = build(lib, **kwargs)
    return _svi(lib, problem, jit)


def _svi(lib, problem: models.Problem, jit: bool = False) -> Callable[[], float]:
    lib.clear_param_store()
    if jit:
        elbo = lib.infer.JitTrace_ELBO(ignore_jit_warnings=True, **problem.elbo_kwargs)
    else:
        elbo = lib.infer.Trace_ELBO(**problem.elbo_kwargs)
    svi = lib.infer.SVI(problem.model, problem.guide, lib.optim.Adam({"lr": models.LR}), elbo)
    if not jit:
        return lambda: svi.step(*problem.args)
    # The jit run keeps its parameters in a store of its own, so that it can be interleaved
    # with the eager run of the same model in one process.
    store = miniprob.ParamStore()

    def step() -> float:
        token = _CURRENT_STORE.set(store)
        try:
            return svi.step(*problem.args)
        finally:
            _CURRENT_STORE.reset(token)

    step.elbo = elbo
    return step


def floor_step(name: str) -> Callable[[], float]:
    build, kwargs, make_floor = models.BENCHMARKS[name]
    return make_floor(build(miniprob, **kwargs).args).step


# ---- timing ------------------------------------------------------------------------------
def time_block(step: Callable[[], float], n: int) -> float:
    # CPU time of this process, not wall time: the machine may be shared, and with one torch
    # thread the process's CPU time is the work of the step (on a quiet machine they agree).
    t0 = CLOCK()
    for _ in range(n):
        step()
    return (CLOCK() - t0) / n


def interleaved(
    steps: dict[str, Callable[[], float]], rounds: int, block_s: float = 0.05
) -> dict[str, list[float]]:
    """Per-round seconds/step of each implementation, timed in turn, after a warm-up.

    The order rotates from round to round, so that each implementation follows each other one
    as often (a step runs slower or faster depending on what the one before left in the caches
    and the allocator; with K = 1000 sites that moved a median by 10%)."""
    sizes = {}
    for key, step in steps.items():
        for _ in range(5):
            step()
        t = time_block(step, 5)
        sizes[key] = max(3, min(200, int(block_s / t)))
        time_block(step, sizes[key])
    times: dict[str, list[float]] = {key: [] for key in steps}
    keys = list(steps)
    for r in range(rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            times[key].append(time_block(steps[key], sizes[key]))
    return times


def summarize(times: dict[str, list[float]]) -> dict:
    out = {key: {"ms_per_step": 1e3 * statistics.median(ts)} for key, ts in times.items()}

    def ratio(a: str, b: str) -> float | None:
        if a not in times or b not in times:
            return None
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    out["ratios"] = {
        "miniprob/floor": ratio("miniprob", "floor"),
        "pyro/floor": ratio("pyro", "floor"),
        "pyro/miniprob": ratio("pyro", "miniprob"),
        "jit/floor": ratio("jit", "floor"),
    }
    out["ratios"] = {k: v for k, v in out["ratios"].items() if v is not None}
    return out


def bench_model(name: str, rounds: int, with_jit: bool) -> dict:
    steps: dict[str, Callable[[], float]] = {}
    result: dict = {}
    steps["floor"] = floor_step(name)
    steps["miniprob"] = svi_step(miniprob, name)
    if pyro is not None:
        steps["pyro"] = svi_step(pyro, name)
    if with_jit:
        jit_step = svi_step(miniprob, name, jit=True)
        jit_step()
        result["jit_compile_s"] = jit_step.elbo.compile_seconds[0]
        steps["jit"] = jit_step
    result.update(summarize(interleaved(steps, rounds)))
    return result


# ---- cost per site -----------------------------------------------------------------------
def per_site(ks: list[int], rounds: int) -> dict:
    """Step time against the number of sites K; slopes of each implementation and of its
    overhead over the floor (what the framework adds per site)."""
    rows = {}
    for k in ks:
        steps = {"floor": models.sites_floor(k).step}
        steps["miniprob"] = _svi(miniprob, models.sites(miniprob, k))
        if pyro is not None:
            steps["pyro"] = _svi(pyro, models.sites(pyro, k))
        times = interleaved(steps, rounds, block_s=0.1)
        rows[k] = {key: 1e6 * statistics.median(ts) for key, ts in times.items()}

    def slope(ys: list[float]) -> float:
        mx, my = statistics.fmean(ks), statistics.fmean(ys)
        num = sum((x - mx) * (y - my) for x, y in zip(ks, ys, strict=True))
        return num / sum((x - mx) ** 2 for x in ks)

    keys = list(rows[ks[0]])
    slopes = {key: slope([rows[k][key] for k in ks]) for key in keys}
    overhead = {
        key: slope([rows[k][key] - rows[k]["floor"] for k in ks]) for key in keys if key != "floor"
    }
    return {"us_per_step": rows, "us_per_site": slopes, "overhead_us_per_site": overhead}


# ---- memory ------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory(num_steps: int, traced_steps: int) -> dict:
    """RSS over ``num_steps`` vae steps, and tracemalloc's view of Python-side growth."""
    step = svi_step(miniprob, "vae")
    for _ in range(100):
        step()
    gc.collect()
    rss = [_rss_mb()]
    for i in range(num_steps):
        step()
        if (i + 1) % (num_steps // 10) == 0:
            rss.append(_rss_mb())
    tracemalloc.start()
    for _ in range(traced_steps // 2):
        step()
    gc.collect()
    mid, _ = tracemalloc.get_traced_memory()
    for _ in range(traced_steps // 2):
        step()
    gc.collect()
    end, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "steps": num_steps,
        "rss_mb_every_tenth": [round(r, 1) for r in rss],
        "rss_growth_mb": round(rss[-1] - rss[0], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tracemalloc_steps": traced_steps,
        "tracemalloc_growth_bytes_per_step": (end - mid) / (traced_steps // 2),
        "tracemalloc_peak_kb": round(peak / 1024, 1),
    }


# ---- report ------------------------------------------------------------------------------
def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "pyro": getattr(pyro, "__version__", None),
        "miniprob": miniprob.__version__,
        "validation": "on (defaults)",
    }


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), torch {m['torch']} with "
        f"{m['torch_threads']} thread, Python {m['python']}, Pyro {m['pyro']}. Validation on, "
        "default settings, Adam(lr=0.01). Median ms per `svi.step`; ratios are medians of paired "
        "per-round ratios (interleaved runs), CPU time of the process. Between two runs on a "
        "shared machine the ratios move by a few hundredths. Command: `make bench` "
        "(`python benchmarks/run.py`).",
        "",
        "| model | floor ms | miniprob ms | pyro ms | jit ms | miniprob/floor | pyro/floor | "
        "pyro/miniprob | jit/floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        ratios = r["ratios"]
        lines.append(
            f"| {name} | {_fmt(r['floor']['ms_per_step'], 3)} | "
            f"{_fmt(r['miniprob']['ms_per_step'], 3)} | "
            f"{_fmt(r.get('pyro', {}).get('ms_per_step'), 3)} | "
            f"{_fmt(r.get('jit', {}).get('ms_per_step'), 3)} | "
            f"{_fmt(ratios.get('miniprob/floor'))} | {_fmt(ratios.get('pyro/floor'))} | "
            f"{_fmt(ratios.get('pyro/miniprob'))} | {_fmt(ratios.get('jit/floor'))} |"
        )
    lines += [
        "",
        "Models (`benchmarks/models.py`): tiny - one Normal latent, 100 observations; linreg - "
        "Bayesian linear regression, 10 features, N=1000, LogNormal noise (p10: 10 particles, "
        "looped or vectorized); hier - 50 groups x 20 observations, nested plates, 204 "
        "parameters; vae - sklearn's 8x8 digits, hidden 128, z=10, minibatch 128 in a "
        "subsampled plate; discrete - two-component mixture with a Bernoulli latent per point in "
        "the guide (score-function gradients). floor: the same step hand-written in PyTorch; "
        "jit: miniprob's `JitTrace_ELBO`.",
    ]
    compile_times = {
        n: r["jit_compile_s"] for n, r in results["models"].items() if "jit_compile_s" in r
    }
    if compile_times:
        lines += [
            "",
            "`JitTrace_ELBO` compile time (first step: trace, optimize, run): "
            + ", ".join(f"{n} {1e3 * t:.0f} ms" for n, t in compile_times.items())
            + ".",
        ]
    if "per_site" in results:
        ps = results["per_site"]
        ks = list(ps["us_per_step"])
        lines += [
            "",
            "Cost per site (a model of K independent latents, each with its own loc and scale "
            "in the guide): µs per step, and the slope in µs per site.",
            "",
            "| K | " + " | ".join(ps["us_per_site"]) + " |",
            "|---|" + "---|" * len(ps["us_per_site"]),
        ]
        for k in ks:
            row = ps["us_per_step"][k]
            lines.append(
                f"| {k} | " + " | ".join(f"{row[key]:.0f}" for key in ps["us_per_site"]) + " |"
            )
        lines.append(
            "| **µs/site** | "
            + " | ".join(f"**{v:.1f}**" for v in ps["us_per_site"].values())
            + " |"
        )
        over = ps["overhead_us_per_site"]
        lines += [
            "",
            "Overhead over the floor per site (slope of the implementation's time minus the "
            "floor's): " + ", ".join(f"{key} {v:.1f} µs" for key, v in over.items()) + ".",
        ]
    if "memory" in results:
        mem = results["memory"]
        lines += [
            "",
            f"Memory over {mem['steps']} `vae` steps (miniprob): RSS "
            f"{mem['rss_mb_every_tenth'][0]} MB after warm-up, "
            f"{mem['rss_mb_every_tenth'][-1]} MB at the end (growth "
            f"{mem['rss_growth_mb']} MB), peak RSS {mem['peak_rss_mb']} MB for the whole "
            f"process; tracemalloc over {mem['tracemalloc_steps']} steps: "
            f"{mem['tracemalloc_growth_bytes_per_step']:.1f} bytes/step of Python heap growth.",
        ]
    if "enum" in results:
        lines += enum_bench.markdown(results["enum"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--skip-per-site", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--no-jit", action="store_true")
    parser.add_argument("--skip-enum", action="store_true", help="leave out enum_bench.py")
    parser.add_argument("--out", default=str(HERE), help="folder for results.json and RESULTS.md")
    args = parser.parse_args(argv)

    torch.set_num_threads(TORCH_THREADS)  # deliberate: overhead, not BLAS parallelism
    rounds = args.rounds or (5 if args.quick else 40)
    names = [n for n in args.only.split(",") if n] or list(models.BENCHMARKS)
    results: dict = {"machine": machine(), "rounds": rounds, "models": {}}
    for name in names:
        t0 = time.perf_counter()
        results["models"][name] = bench_model(name, rounds, with_jit=not args.no_jit)
        r = results["models"][name]
        print(
            f"{name:>16}: "
            + "  ".join(
                f"{k} {r[k]['ms_per_step']:.3f} ms"
                for k in ("floor", "miniprob", "pyro", "jit")
                if k in r
            )
            + "  |  "
            + "  ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items())
            + f"  ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    if not args.skip_per_site:
        ks = [10, 100, 300] if args.quick else [10, 100, 1000]
        results["per_site"] = per_site(ks, max(3, rounds // 2))
        print(
            "per site (µs/site):",
            {k: round(v, 1) for k, v in results["per_site"]["us_per_site"].items()},
        )
    if not args.skip_enum:
        results["enum"] = enum_bench.run(max(5, rounds // 2), args.quick)
        print("\n".join(enum_bench.markdown(results["enum"])), flush=True)
    if not args.skip_memory:
        results["memory"] = memory(400 if args.quick else 2000, 100 if args.quick else 600)
        print("memory:", results["memory"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "RESULTS.md").write_text(markdown(results))
    if (HERE / "distributed.json").exists():  # keep the section of benchmarks/distributed.py
        import distributed

        saved = json.loads((HERE / "distributed.json").read_text())
        distributed.write_section(out / "RESULTS.md", distributed.section(saved))
    print(markdown(results))


if __name__ == "__main__":
    main()
