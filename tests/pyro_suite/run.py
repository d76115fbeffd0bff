"""Run Pyro's own unit tests with miniprob standing in for ``pyro``, and count what passes.

Each test file runs in a subprocess of its own, under pytest from the root of a Pyro checkout
(its ``tests/conftest.py`` and ``setup.cfg`` apply, as when Pyro runs them), with the plugin
:mod:`miniprob_as_pyro` aliasing ``pyro`` and ``pyro.*`` to ``miniprob`` and ``miniprob.*``.
Nothing of Pyro's is copied here: the checkout is found at ``--pyro-source``, ``$PYRO_SOURCE``
or ``/work/pyro-src`` (Pyro's tests are not in its PyPI sdist, so a clone of
https://github.com/pyro-ppl/pyro is needed). ``--reference`` runs the same files against the
real Pyro, for the totals to compare with.

Usage::

    python -m tests.pyro_suite.run                      # the default files, a table of counts
    python -m tests.pyro_suite.run tests/poutine/test_runtime.py --json counts.json
    python -m tests.pyro_suite.run --reference          # the same files under Pyro itself

A name or module miniprob lacks is a placeholder that raises ``NotImplementedError`` when used,
so the tests of a file that imports one still run (those using it fail); with ``--strict`` it is
an ``ImportError``, and a file that fails to import counts as one error and no passes.

Example::

    >>> parse_junit('<testsuite><testcase name="a"/><testcase name="b"><failure/></testcase>'
    ...             '</testsuite>')
    {'passed': 1, 'failed': 1, 'errors': 0, 'skipped': 0}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

DEFAULT_FILES = (
    "tests/poutine/test_poutines.py",
    "tests/poutine/test_runtime.py",
    "tests/poutine/test_trace_struct.py",
    "tests/poutine/test_nesting.py",
    "tests/poutine/test_properties.py",
    "tests/infer/test_valid_models.py",
)


def find_pyro_source(given: str | None = None) -> Path | None:
    """The Pyro checkout to take tests from: ``given``, else ``$PYRO_SOURCE``, else
    ``/work/pyro-src``; None when that directory holds no ``tests/poutine``."""
    source = Path(given or os.environ.get("PYRO_SOURCE") or "/work/pyro-src")
    return source if (source / "tests" / "poutine").is_dir() else None


def parse_junit(text: str) -> dict[str, int]:
    """Counts of passed, failed, errored and skipped test cases in a JUnit XML report."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for case in ET.fromstring(text).iter("testcase"):
        kinds = {child.tag for child in case}
        if "error" in kinds:
            counts["errors"] += 1
        elif "failure" in kinds:
            counts["failed"] += 1
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def run_file(
    source: Path,
    test_file: str | tuple[str, ...],
    reference: bool = False,
    strict: bool = False,
    timeout: float = 1800.0,
    extra_args: tuple[str, ...] = (),
) -> dict[str, int]:
    """Run one of Pyro's test files (a path relative to ``source``, or pytest node ids; several
    in a tuple) in a subprocess."""
    files = (test_file,) if isinstance(test_file, str) else test_file
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        if not reference:
            cmd += ["-p", "miniprob_as_pyro"]
        cmd += [f"--junitxml={report}", "-o", "junit_family=xunit1", *extra_args, *files]
        env = dict(os.environ)
        env.pop("MINIPROB_PYRO_SUITE_STRICT", None)
        if strict:
            env["MINIPROB_PYRO_SUITE_STRICT"] = "1"
        paths = [str(HERE)] + ([] if reference else [str(REPO)])
        env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        try:
            subprocess.run(
                cmd, cwd=source, env=env, timeout=timeout, capture_output=True, check=False
            )
        except subprocess.TimeoutExpired:
            return {"passed": 0, "failed": 0, "errors": 1, "skipped": 0, "timed_out": 1}
        if not report.exists():  # pytest could not even start
            return {"passed": 0, "failed": 0, "errors": 1, "skipped": 0}
        return parse_junit(report.read_text())


def format_counts(results: dict[str, dict[str, int]]) -> str:
    """A table of the counts per file and in all."""
    rows = [("file", "passed", "failed", "errors", "skipped")]
    total = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for name, counts in results.items():
        rows.append((name, *(str(counts[k]) for k in total)))
        for k in total:
            total[k] += counts[k]
    rows.append(("total", *(str(v) for v in total.values())))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        " ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument("--pyro-source", default=None)
    parser.add_argument("--reference", action="store_true", help="run them under Pyro itself")
    parser.add_argument("--strict", action="store_true", help="no placeholders for names")
    parser.add_argument("--json", default=None, help="also write the counts to this file")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per file")
    args = parser.parse_args(argv)
    source = find_pyro_source(args.pyro_source)
    if source is None:
        print("no Pyro checkout found (give --pyro-source or set PYRO_SOURCE)", file=sys.stderr)
        return 2
    results = {}
    for test_file in args.files:
        results[test_file] = run_file(source, test_file, args.reference, args.strict, args.timeout)
        print(test_file, results[test_file], flush=True)
    print(format_counts(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
