"""Run Pyro's own SVI examples and tutorials unchanged against miniprob.

Each target (an example script from Pyro's ``examples/`` or the code cells of
a tutorial notebook from ``tutorial/source/``) runs in its own subprocess with
``pyro`` and every ``pyro.*`` module name mapped onto the ``miniprob`` module
of the same path, sockets disabled (targets that reach for the network are
reported as ``network`` rather than failures), ``CI=1`` set so that the
tutorials take their smoke-test step counts, and a timeout.  The result of
each target is one line: ``ok``, ``network``, ``timeout`` or the last error
line of the traceback, which names the missing name or the failing call.

Usage::

    python tools/pyro_examples.py [--pyro-src /work/pyro-src] [--timeout 120]
        [--only NAME ...] [--json OUT.json] [--miniprob SOURCE_TREE]

This is a measuring tool, not a test: it needs a checkout of Pyro's
repository, which CI does not have.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

VERSION_GATE = re.compile(r"^(\s*)assert pyro\.__version__.*$", re.MULTILINE)

# Example scripts that train with SVI, with arguments that shrink them to a
# few steps.  MCMC-only examples are left out: miniprob has no MCMC.
EXAMPLES: dict[str, list[str]] = {
    "svi_torch.py": ["--num-epochs", "2"],
    "hmm.py": ["-n", "2", "-m", "1", "--truncate", "20"],
    "einsum.py": ["-n", "1"],
    "inclined_plane.py": ["-n", "20"],
    "lda.py": ["-n", "2", "-d", "20", "-w", "50", "-wd", "8", "-t", "3"],
    "toy_mixture_model_discrete_enumeration.py": ["-n", "5", "-o", "100"],
    "minipyro.py": ["-n", "3"],
    "sparse_regression.py": [
        "--num-steps",
        "3",
        "--num-data",
        "20",
        "--num-dimensions",
        "20",
        "--num-restarts",
        "1",
    ],
    "sparse_gamma_def.py": ["--num-epochs", "2"],
    "eight_schools/svi.py": ["--num-epochs", "2"],
    "capture_recapture/cjs.py": ["-n", "2", "-m", "1"],
    "dmm.py": ["-n", "1"],
    "rsa/hyperbole.py": ["-n", "2"],
    "vae/vae.py": ["-n", "1"],
    "cvae/main.py": ["-n", "1"],
    "scanvi/scanvi.py": ["-n", "1"],
}

# Tutorials that use SVI (or the handlers it is built on).
TUTORIALS: list[str] = [
    "intro_long",
    "intro_part_ii",
    "svi_part_i",
    "svi_part_ii",
    "svi_part_iii",
    "svi_part_iv",
    "bayesian_regression",
    "bayesian_regression_ii",
    "gmm",
    "effect_handlers",
    "tensor_shapes",
    "enumeration",
    "model_rendering",
    "custom_objectives",
    "mle_map",
    "modules",
    "easyguide",
    "predictive_deterministic",
    "jit",
    "vae",
    "dirichlet_process_mixture",
    "boosting_bbvi",
    "ekf",
    "working_memory",
    "prodlda",
    "ss-vae",
]

ALIAS_PRELUDE = r'''
import importlib, importlib.abc, importlib.util, sys

class _PyroAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serve ``pyro.X`` by the already imported ``miniprob.X``."""

    def find_spec(self, name, path=None, target=None):
        if name != "pyro" and not name.startswith("pyro."):
            return None
        target_name = "miniprob" + name[len("pyro"):]
        if importlib.util.find_spec(target_name) is None:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        module = importlib.import_module("miniprob" + spec.name[len("pyro"):])
        self._saved = (module.__spec__, module.__loader__, module.__name__)
        return module

    def exec_module(self, module):
        module.__spec__, module.__loader__, module.__name__ = self._saved

sys.meta_path.insert(0, _PyroAlias())
'''

NO_NETWORK_PRELUDE = r"""
import socket

class _NoNetwork(OSError):
    pass

def _refuse(*args, **kwargs):
    raise _NoNetwork("network disabled by tools/pyro_examples.py")

socket.socket.connect = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""


def notebook_source(path: Path) -> str:
    """Join a notebook's code cells, dropping shell (``!``) and magic lines."""
    cells = json.loads(path.read_text())["cells"]
    lines: list[str] = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for line in "".join(cell["source"]).splitlines():
            stripped = line.lstrip()
            if stripped.startswith(("!", "%")):
                indent = line[: len(line) - len(stripped)]
                lines.append(indent + "pass")
            else:
                lines.append(line)
        lines.append("")
    return "\n".join(lines)


def child_program(kind: str, target: Path, argv: list[str], alias: bool = True) -> str:
    """The Python program a subprocess runs for one target."""
    if kind == "example":
        # The one edit made to a script: Pyro's examples gate on Pyro's own
        # version string, which miniprob (its own package) does not claim.
        source = VERSION_GATE.sub(r"\1pass", target.read_text())
        body = (
            "import sys\n"
            f"sys.argv = {[str(target)] + argv!r}\n"
            f"sys.path.insert(0, {str(target.parent)!r})\n"
            f"src = {source!r}\n"
            f"namespace = {{'__name__': '__main__', '__file__': {str(target)!r}}}\n"
            f"exec(compile(src, {str(target)!r}, 'exec'), namespace)\n"
        )
    else:
        source = VERSION_GATE.sub(r"\1pass", notebook_source(target))
        body = (
            "import sys\n"
            f"sys.path.insert(0, {str(target.parent)!r})\n"
            f"src = {source!r}\n"
            f"exec(compile(src, {str(target)!r}, 'exec'), {{'__name__': '__main__'}})\n"
        )
    return (ALIAS_PRELUDE if alias else "") + NO_NETWORK_PRELUDE + body


def run_one(
    kind: str,
    target: Path,
    argv: list[str],
    timeout: float,
    workdir: Path,
    repo: Path,
    alias: bool = True,
):
    """Run one target; return ``(status, detail, seconds)``."""
    if kind == "tutorial" and not notebook_source(target).strip():
        return "no code", "the notebook has no code cells", 0.0
    env = dict(os.environ, CI="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", child_program(kind, target, argv, alias)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "timeout", f"over {timeout:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if proc.returncode == 0:
        return "ok", "", seconds
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit status {proc.returncode}"
    if "network disabled" in proc.stderr:
        return "network", last, seconds
    return "fail", last, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyro-src", default="/work/pyro-src", type=Path)
    parser.add_argument("--timeout", default=120.0, type=float)
    parser.add_argument(
        "--miniprob",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the source tree whose miniprob is measured",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="run under the installed Pyro instead (no alias), to tell miniprob's "
        "failures from the target's own",
    )
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    targets = [
        ("example", args.pyro_src / "examples" / name, argv, name)
        for name, argv in EXAMPLES.items()
    ] + [
        ("tutorial", args.pyro_src / "tutorial/source" / f"{name}.ipynb", [], name)
        for name in TUTORIALS
    ]
    if args.only:
        targets = [t for t in targets if t[3] in args.only]
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "pyro_examples_run"
    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for kind, path, argv, name in targets:
        if not path.exists():
            status, detail, seconds = "missing", f"no file {path}", 0.0
        else:
            status, detail, seconds = run_one(
                kind, path, argv, args.timeout, workdir, args.miniprob, not args.reference
            )
        results[name] = {"kind": kind, "status": status, "detail": detail}
        print(f"{kind:8s} {name:42s} {status:8s} {seconds:6.1f}s {detail}", flush=True)
    counts = {}
    for r in results.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print("totals:", counts)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
