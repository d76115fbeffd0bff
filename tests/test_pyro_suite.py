"""Pyro's own unit tests, run with miniprob standing in for ``pyro`` (a fast subset; the full
run is ``python -m tests.pyro_suite.run``, see :mod:`tests.pyro_suite.run`).

Pyro's tests are not in its PyPI sdist and CI cannot reach GitHub, and this repository does not
copy Pyro's code: these tests run only where a checkout of https://github.com/pyro-ppl/pyro is
at hand (``$PYRO_SOURCE``, default ``/work/pyro-src``), and skip elsewhere.
"""

import pytest

from tests.pyro_suite.run import find_pyro_source, run_file

SOURCE = find_pyro_source()


@pytest.mark.skipif(SOURCE is None, reason="no Pyro checkout (set PYRO_SOURCE)")
def test_pyros_runtime_and_trace_graph_tests_pass():
    """All of ``test_runtime.py``, and ``test_trace_struct.py`` on two of its edge orders."""
    trace_struct = "tests/poutine/test_trace_struct.py::"
    counts = run_file(
        SOURCE,
        (
            "tests/poutine/test_runtime.py",
            trace_struct + "test_topological_sort[edges7]",
            trace_struct + "test_connectivity_on_removal[edges1000]",
        ),
    )
    assert counts == {"passed": 4, "failed": 0, "errors": 0, "skipped": 0}
