"""Cold and warm first-compile time of ``SVI(..., compile=True)`` on the benchmark models.

Usage::

    python benchmarks/compile_time.py                 # all five models
    python benchmarks/compile_time.py --only tiny,vae

For each model a fresh Python process with an empty ``TORCHINDUCTOR_CACHE_DIR`` (cold) times
its imports and its first step (the eager step that creates the parameters, the capture and
TorchInductor's compile); a second fresh process on the same cache directory (warm) times the
same, reading the program from TorchInductor's FX graph cache. One model runs at a time, so the
figures are the compile's own on this machine. Prints one line per model and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import json, sys, time
start = time.perf_counter()
sys.path[:0] = [{here!r}, {root!r}]
import torch
torch.set_num_threads(1)
import models, miniprob
from miniprob.infer import SVI, Trace_ELBO
from miniprob.optim import Adam
imported = time.perf_counter()
build, kwargs, _ = models.BENCHMARKS[{name!r}]
problem = build(miniprob, **kwargs)
svi = SVI(problem.model, problem.guide, Adam({{"lr": 0.01}}), Trace_ELBO(), compile=True)
begin = time.perf_counter()
svi.step(*problem.args)
first = time.perf_counter() - begin
print(json.dumps({{"import_s": imported - start, "first_step_s": first,
                  "compile_s": svi._compiled.compile_seconds[0]}}))
"""


def measure(name: str, cache: str) -> dict:
    """One fresh process's import and first-step times for model ``name`` on ``cache``."""
    code = CHILD.format(here=str(HERE), root=str(HERE.parent), name=name)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="tiny,linreg,hier,vae,discrete")
    args = parser.parse_args()
    rows = []
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory() as cache:
            cold, warm = measure(name, cache), measure(name, cache)
        rows.append((name, cold, warm))
        print(
            f"{name}: cold first step {cold['first_step_s']:.1f} s (compile "
            f"{cold['compile_s']:.1f} s), warm {warm['first_step_s']:.1f} s; "
            f"imports {cold['import_s']:.1f} s",
            flush=True,
        )
    print("\n| model | cold first step (s) | of it, compile (s) | warm (s) | imports (s) |")
    print("|---|---|---|---|---|")
    for name, cold, warm in rows:
        print(
            f"| {name} | {cold['first_step_s']:.1f} | {cold['compile_s']:.1f} "
            f"| {warm['first_step_s']:.1f} | {cold['import_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
