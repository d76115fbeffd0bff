"""A/B: the working tree's miniprob against a git revision's, on the benchmark models.

Usage::

    python benchmarks/ab.py --base HEAD --only tiny,vae      # is the uncommitted change faster?
    python benchmarks/ab.py --base main~3 --rounds 300

The revision's ``miniprob/`` is exported with ``git archive`` into a temporary folder and
imported as ``miniprob_base`` (the package uses relative imports only), so both versions run in
one process, each with its own param store. Steps are timed in short blocks, alternately, with
the order swapped every round (the one that runs first after the other has colder caches); the
result is the median of the per-round ratios new/base with its quartiles. Changes worth a few
percent need a few hundred rounds on a shared machine.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models  # noqa: E402


def export_base(revision: str, into: Path) -> None:
    """Write ``revision``'s ``miniprob/`` to ``into/miniprob_base``."""
    archive = subprocess.run(
        ["git", "archive", revision, "miniprob"],
        cwd=HERE.parent,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "miniprob").rename(into / "miniprob_base")


def svi_step(lib_name: str, model: str):
    lib = importlib.import_module(lib_name)
    infer = importlib.import_module(lib_name + ".infer")
    optim = importlib.import_module(lib_name + ".optim")
    build, kwargs, _ = models.BENCHMARKS[model]
    problem = build(lib, **kwargs)
    lib.clear_param_store()
    svi = infer.SVI(
        problem.model,
        problem.guide,
        optim.Adam({"lr": models.LR}),
        infer.Trace_ELBO(**problem.elbo_kwargs),
    )
    return lambda: svi.step(*problem.args)


def compare(model: str, rounds: int, steps: int) -> tuple[float, float, float]:
    """Median and quartiles of the per-round ratios new/base of ``steps`` steps each."""
    fns = {"new": svi_step("miniprob", model), "base": svi_step("miniprob_base", model)}
    for fn in fns.values():
        for _ in range(20):
            fn()
    ratios = []
    for r in range(rounds):
        times = {}
        for key in ("new", "base") if r % 2 == 0 else ("base", "new"):
            t0 = time.process_time()
            for _ in range(steps):
                fns[key]()
            times[key] = time.process_time() - t0
        ratios.append(times["new"] / times["base"])
    q1, q2, q3 = statistics.quantiles(ratios, n=4)
    return q2, q1, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--only", default="tiny,vae", help="comma-separated model names")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        export_base(args.base, Path(tmp))
        sys.path.insert(0, tmp)
        for model in args.only.split(","):
            median, q1, q3 = compare(model, args.rounds, args.steps)
            print(f"{model:>16}: new/base {median:.3f}  (quartiles {q1:.3f}, {q3:.3f})")


if __name__ == "__main__":
    main()
