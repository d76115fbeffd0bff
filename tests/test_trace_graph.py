"""``Trace`` as a graph (Pyro's API): edges, ``add_edge``, ``remove_node``, ``predecessors``,
``successors``, ``topological_sort``, ``copy``, and the edges a ``graph_type="dense"`` trace
records, compared with Pyro's on the same models."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob as mp
from miniprob import poutine
from miniprob.poutine import Trace
from miniprob.poutine.trace_struct import DuplicateSiteError

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


# ---- models, each written once against a library ---------------------------------------------


def sequential_plates(lib):
    d = lib.distributions
    loc = lib.sample("loc", d.Normal(torch.zeros(1), 1.0))
    for i in lib.plate("outer", 2):
        for j in lib.plate(f"inner_{i}", 2):
            lib.sample(f"z_{i}_{j}", d.Normal(loc, 1.0))


def vectorized_plates(lib):
    d = lib.distributions
    a = lib.sample("a", d.Normal(0.0, 1.0))
    lib.param("p", torch.ones(3))
    with lib.plate("rows", 3, dim=-2):
        with lib.plate("cols", 4, subsample_size=2):
            b = lib.sample("b", d.Normal(a, 1.0))
            lib.sample("obs", d.Normal(b, 1.0), obs=torch.zeros(3, 2))


def mixed_plates(lib):
    d = lib.distributions
    x = lib.sample("x", d.Normal(0.0, 1.0))
    for i in lib.plate("seq", 3, subsample_size=2):
        with lib.plate(f"vec_{i}", 2):
            y = lib.sample(f"y_{i}", d.Normal(x, 1.0))
            lib.sample(f"w_{i}", d.Normal(y, 1.0))
    lib.sample("last", d.Normal(x, 1.0))


MODELS = [sequential_plates, vectorized_plates, mixed_plates]


def dense_trace(lib, model, rng_seed=0):
    lib.clear_param_store()
    lib.set_rng_seed(rng_seed)
    return lib.poutine.trace(model, graph_type="dense").get_trace(lib)


def plate_sites(tr):
    return {f.name for s in tr.nodes.values() for f in s.get("cond_indep_stack", ())}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_dense_edges_are_pyros(pyro_ref, model):
    expected = dense_trace(pyro_ref, model)
    actual = dense_trace(mp, model)
    assert actual.graph_type == "dense"
    assert set(actual.edges) == set(expected.edges)
    # The plate index sites Pyro records that miniprob does not (non-subsampled plates) are
    # nodes without edges.
    plates = plate_sites(expected)
    assert set(expected.nodes) - set(actual.nodes) <= plates
    for name in actual.nodes:
        if name in expected.nodes:
            assert actual.predecessors(name) == expected.predecessors(name), name
            assert actual.successors(name) == expected.successors(name), name


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_flat_trace_has_no_edges(model):
    tr = mp.poutine.trace(model).get_trace(mp)
    assert list(tr.edges) == [] and tr._succ == {} and tr._pred == {}
    assert tr.topological_sort() == list(tr.nodes)[::-1]  # no edges: reversed, as in Pyro


def test_dense_edges_as_a_context_manager_and_after_pruning(pyro_ref):
    edges = {("a", "b"), ("a", "obs"), ("b", "obs")}
    for lib in (pyro_ref, mp):
        with lib.poutine.trace(graph_type="dense") as tracer:
            vectorized_plates(lib)
        assert set(tracer.trace.edges) == edges
    pruned = mp.poutine.prune_subsample_sites(tracer.trace)
    assert "cols" not in pruned.nodes and set(pruned.edges) == edges


EDGE_SETS = [
    [(1, 2), (1, 3), (3, 4), (3, 5), (4, 6), (4, 7)],
    [(1, 2), (3, 5), (1, 4), (1, 3), (5, 6), (6, 7)],
]


@pytest.mark.parametrize(
    "edges",
    [
        list(p)
        for edges in EDGE_SETS
        for p in itertools.islice(itertools.permutations(edges), 0, None, 97)
    ],
)
def test_topological_sort_and_removal_keep_the_order(edges):
    tr = Trace()
    for n1, n2 in edges:
        tr.add_edge(n1, n2)
    order = tr.topological_sort()
    assert sorted(order) == sorted(set().union(*edges))
    rank = {n: i for i, n in enumerate(order)}
    assert all(rank[a] < rank[b] for a, b in edges)
    assert tr.topological_sort(reverse=True) == order[::-1]
    # Removing sites from the last in order on, the rest stays reachable from the root.
    while order:
        assert len(list(tr._dfs(1, set()))) == len(order)
        tr.remove_node(order.pop())
    assert list(tr.edges) == [] and tr.nodes == {}


@settings(max_examples=30)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), max_size=20))
def test_topological_sort_of_any_dag(pairs):
    edges = {(min(a, b), max(a, b)) for a, b in pairs if a != b}
    tr = Trace()
    for a, b in sorted(edges, key=lambda e: (e[1], e[0]), reverse=True):
        tr.add_edge(a, b)
    rank = {n: i for i, n in enumerate(tr.topological_sort())}
    assert all(rank[a] < rank[b] for a, b in edges)
    assert set(tr.edges) == edges
    assert all(tr.predecessors(b) == {a for a, c in edges if c == b} for b in tr.nodes)


def test_a_long_chain_sorts_without_recursion():
    tr = Trace()
    for i in range(5000):
        tr.add_edge(i, i + 1)
    assert tr.topological_sort() == list(range(5001))


def test_a_cycle_is_an_error_naming_its_sites():
    tr = Trace()
    tr.add_edge("a", "b")
    tr.add_edge("b", "a")
    with pytest.raises(ValueError, match="cycle through sites"):
        tr.topological_sort()


def test_graph_api_matches_pyros_on_a_hand_made_graph(pyro_ref):
    def build(trace_cls):
        tr = trace_cls()
        tr.add_node("x", type="sample", name="x")
        for a, b in [("x", "y"), ("x", "z"), ("y", "z")]:
            tr.add_edge(a, b)
        return tr

    ours, theirs = build(Trace), build(pyro_ref.poutine.Trace)
    for tr in (ours, theirs):
        assert tr.nodes["y"] == {}  # added by add_edge, empty
        assert tr.topological_sort() == ["x", "y", "z"]
    ours.remove_node("y")
    theirs.remove_node("y")
    assert set(ours.edges) == set(theirs.edges) == {("x", "z")}
    assert ours.predecessors("z") == theirs.predecessors("z") == {"x"}
    with pytest.raises(KeyError):
        ours.successors("y")
    with pytest.raises(KeyError):
        theirs.successors("y")
    with pytest.raises(KeyError):
        ours.remove_node("y")


def test_copy_keeps_the_edges_and_owns_them():
    tr = Trace(graph_type="dense")
    tr.add_edge("a", "b")
    new = tr.copy()
    assert new.graph_type == "dense" and set(new.edges) == {("a", "b")}
    new.add_edge("b", "c")
    new.remove_node("a")
    assert set(tr.edges) == {("a", "b")} and "c" not in tr.nodes


def test_a_param_recorded_again_loses_its_edges_as_in_pyro(pyro_ref):
    for trace_cls in (Trace, pyro_ref.poutine.Trace):
        tr = trace_cls()
        tr.add_node("p", type="param", name="p")
        tr.add_edge("p", "x")
        tr.add_node("p", type="param", name="p")
        assert list(tr.edges) == []


def test_a_bad_graph_type_is_refused():
    with pytest.raises(ValueError, match="not a valid graph type"):
        Trace("sparse")


@pytest.mark.parametrize(
    "first, second, pyro_says",
    [
        ("sample", "sample", "Multiple sample sites named 'x'"),
        ("param", "sample", "x is already in the trace as a param"),
        ("sample", "param", "x is already in the trace as a sample"),
    ],
)
def test_duplicate_sites_carry_pyros_words(pyro_ref, first, second, pyro_says):
    for trace_cls in (Trace, pyro_ref.poutine.Trace):
        tr = trace_cls()
        tr.add_node("x", type=first, name="x")
        with pytest.raises(RuntimeError, match=pyro_says):
            tr.add_node("x", type=second, name="x")
    tr = Trace()
    tr.add_node("x", type=first, name="x")
    with pytest.raises(DuplicateSiteError, match="unique name"):
        tr.add_node("x", type=second, name="x")


def test_a_dense_trace_in_a_model_with_duplicate_names_fails_as_a_flat_one():
    def model():
        mp.sample("x", mp.distributions.Normal(0.0, 1.0))
        mp.sample("x", mp.distributions.Normal(0.0, 1.0))

    with pytest.raises(RuntimeError, match="Multiple sample sites named 'x'"):
        poutine.trace(model, graph_type="dense").get_trace()
