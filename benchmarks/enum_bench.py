"""Enumeration benchmarks: ``TraceEnum_ELBO`` steps, miniprob vs Pyro, and the HMM's cost
against its length.

Models, each written once against the Pyro-style API (``lib`` is ``miniprob`` or ``pyro``):

- ``mixture``: the Gaussian mixture tutorial's model, 3 components, 1000 points, assignments
  enumerated, a MAP guide for the weights, locations and scale;
- ``hmm``: a 3-state hidden Markov model with Normal emissions over 50 steps of 20 sequences
  (a plate), the chain under ``markov``, its parameters in the model, an empty guide.

Usage::

    python benchmarks/enum_bench.py [--quick]

``run.py`` runs it too (``--skip-enum`` to leave it out) and adds its table to RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import miniprob  # noqa: E402
from miniprob.params import _CURRENT as _CURRENT_STORE  # noqa: E402

try:
    import pyro
except ImportError:  # the benchmark still runs, without the comparison
    pyro = None

LR = 0.01


def mixture_model(lib, K: int) -> Callable:
    """The Gaussian-mixture tutorial's model: ``K`` components, each point's assignment
    enumerated."""
    dist = lib.distributions

    @lib.infer.config_enumerate
    def model(data):
        weights = lib.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
        scale = lib.sample("scale", dist.LogNormal(0.0, 2.0))
        with lib.plate("components", K):
            locs = lib.sample("locs", dist.Normal(0.0, 10.0))
        with lib.plate("data", len(data)):
            assignment = lib.sample("assignment", dist.Categorical(weights))
            lib.sample("obs", dist.Normal(locs[assignment], scale), obs=data)

    return model


def mixture_guide(lib, locs_init: torch.Tensor) -> Callable:
    """A MAP guide for :func:`mixture_model`'s global sites, the locations started at
    ``locs_init``."""
    dist, K = lib.distributions, len(locs_init)

    def guide(data):
        simplex, positive = dist.constraints.simplex, dist.constraints.positive
        weights = lib.param("weights_map", torch.ones(K) / K, constraint=simplex)
        scale = lib.param("scale_map", torch.tensor(1.0), constraint=positive)
        locs = lib.param("locs_map", locs_init.clone())
        lib.sample("weights", dist.Delta(weights).to_event(1))
        lib.sample("scale", dist.Delta(scale))
        with lib.plate("components", K):
            lib.sample("locs", dist.Delta(locs))

    return guide


def mixture(lib, n: int = 1000):
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (n,), generator=gen)
    data = torch.tensor([-4.0, 0.5, 5.0])[labels] + 0.8 * torch.randn(n, generator=gen)
    guide = mixture_guide(lib, torch.tensor([-3.0, 0.0, 3.0]))
    return mixture_model(lib, 3), guide, (data,), 1


def hmm(lib, length: int = 50, sequences: int = 20):
    dist, K = lib.distributions, 3
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(length, sequences, generator=gen) + torch.arange(3.0).repeat(7)[:sequences]

    def model(data):
        trans = lib.param("trans", 0.1 + 0.7 * torch.eye(K), constraint=dist.constraints.simplex)
        locs = lib.param("locs", torch.tensor([-0.5, 1.0, 2.5]))
        scale = lib.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with lib.plate("sequences", data.shape[1], dim=-1):
            x = 0
            for t in lib.markov(range(len(data))):
                x = lib.sample(
                    f"x_{t}", dist.Categorical(trans[x]), infer={"enumerate": "parallel"}
                )
                lib.sample(f"y_{t}", dist.Normal(locs[x], scale), obs=data[t])

    def guide(data):
        pass

    return model, guide, (data,), 1


BENCHMARKS: dict[str, Callable] = {"mixture": mixture, "hmm": hmm}


def svi_step(lib, build: Callable, **kwargs) -> Callable[[], float]:
    """``svi.step`` of a model; miniprob's in a param store of its own (several HMM lengths,
    with the same parameter names, run interleaved)."""
    lib.clear_param_store()
    model, guide, args, mpn = build(lib, **kwargs)
    elbo = lib.infer.TraceEnum_ELBO(max_plate_nesting=mpn)
    svi = lib.infer.SVI(model, guide, lib.optim.Adam({"lr": LR}), elbo)
    if lib is not miniprob:
        return lambda: svi.step(*args)
    store = miniprob.ParamStore()

    def step() -> float:
        token = _CURRENT_STORE.set(store)
        try:
            return svi.step(*args)
        finally:
            _CURRENT_STORE.reset(token)

    return step


def bench(rounds: int) -> dict:
    """Median ms/step of each library on each model, and the paired pyro/miniprob ratio."""
    from run import interleaved, summarize

    results = {}
    for name, build in BENCHMARKS.items():
        steps = {"miniprob": svi_step(miniprob, build)}
        if pyro is not None:
            steps["pyro"] = svi_step(pyro, build)
        results[name] = summarize(interleaved(steps, rounds))
    return results


def hmm_scaling(lengths: list[int], rounds: int) -> dict:
    """miniprob's ms/step of the HMM against its length, and the least-squares slope."""
    from run import interleaved

    steps = {str(t): svi_step(miniprob, hmm, length=t) for t in lengths}
    times = interleaved(steps, rounds)
    ms = [1e3 * statistics.median(times[str(t)]) for t in lengths]
    mean_t, mean_ms = statistics.mean(lengths), statistics.mean(ms)
    slope = sum((t - mean_t) * (y - mean_ms) for t, y in zip(lengths, ms, strict=True)) / sum(
        (t - mean_t) ** 2 for t in lengths
    )
    return {"lengths": lengths, "ms_per_step": ms, "ms_per_time_step": slope}


def run(rounds: int, quick: bool = False) -> dict:
    lengths = [10, 20, 40] if quick else [10, 20, 40, 80]
    return {"models": bench(rounds), "hmm_scaling": hmm_scaling(lengths, max(3, rounds // 2))}


def markdown(results: dict) -> list[str]:
    lines = [
        "",
        "## Enumeration (`TraceEnum_ELBO`)",
        "",
        "`benchmarks/enum_bench.py`: mixture - the Gaussian mixture tutorial's model, 3 "
        "components, 1000 points, assignments enumerated, MAP guide; hmm - 3 states, Normal "
        "emissions, 50 steps of 20 sequences under `markov`, empty guide.",
        "",
        "| model | miniprob ms | pyro ms | pyro/miniprob |",
        "|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        pyro_ms = r.get("pyro", {}).get("ms_per_step")
        ratio = r["ratios"].get("pyro/miniprob")
        lines.append(
            f"| {name} | {r['miniprob']['ms_per_step']:.3f} | "
            f"{'-' if pyro_ms is None else f'{pyro_ms:.3f}'} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} |"
        )
    sc = results["hmm_scaling"]
    lines += [
        "",
        "HMM step cost against its length (miniprob): "
        + ", ".join(
            f"T={t}: {ms:.2f} ms" for t, ms in zip(sc["lengths"], sc["ms_per_step"], strict=True)
        )
        + f"; least-squares slope {sc['ms_per_time_step']:.3f} ms per time step (linear: "
        "`markov` lets the chain reuse two enumeration dims).",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = run(args.rounds or (5 if args.quick else 20), args.quick)
    print("\n".join(markdown(results)))


if __name__ == "__main__":
    main()
