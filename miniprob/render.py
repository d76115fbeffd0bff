"""``render_model``: a picture of a model, its sites as nodes, its dependencies as edges and
its plates as boxes (graphviz clusters), the same graph as Pyro's ``render_model``.

It stands on :func:`miniprob.infer.inspect.get_model_relations` (provenance tracking over
one run of the model). The ``graphviz`` Python package (the ``render`` extra) builds the
graph; writing a file also needs graphviz's ``dot`` program (Debian's ``graphviz`` package),
asked for only then.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> def model(data):
    ...     m = pyro.sample("m", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("N", len(data)):
    ...         pyro.sample("obs", dist.Normal(m, 1.0), obs=data)
    >>> graph = pyro.render_model(model, model_args=(torch.ones(3),))
    >>> "m -> obs" in graph.source
    True
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .infer.inspect import get_model_relations


def generate_graph_specification(relations: dict, render_params: bool = False) -> dict:
    """The nodes, plates (with their parents), node data and edges to draw for the relations
    of :func:`~miniprob.infer.inspect.get_model_relations`.

    Example::

        >>> relations = {"sample_sample": {"a": [], "b": ["a"]}, "sample_param": {},
        ...              "sample_dist": {"a": "Normal", "b": "Normal"}, "param_constraint": {},
        ...              "plate_sample": {"N": ["b"]}, "observed": ["b"]}
        >>> spec = generate_graph_specification(relations)
        >>> spec["plate_groups"], spec["edge_list"]
        ({'N': ['b'], None: ['a']}, [('a', 'b')])
    """
    plate_groups: dict[Any, list[str]] = dict(relations["plate_sample"])
    in_plates = {rv for rvs in plate_groups.values() for rv in rvs}
    plate_groups[None] = [rv for rv in relations["sample_sample"] if rv not in in_plates]
    params = set()
    if render_params:
        params = {p for ps in relations["sample_param"].values() for p in ps}
        plate_groups[None].extend(params)
    node_data = {
        rv: {
            "is_observed": rv in relations["observed"],
            "distribution": relations["sample_dist"][rv],
        }
        for rv in relations["sample_sample"]
    }
    if render_params:
        for param, constraint in relations["param_constraint"].items():
            node_data[param] = {
                "is_observed": False,
                "constraint": constraint,
                "distribution": None,
            }
    # A plate's parent is the plate whose sites include all of its own (the order of the
    # trace decides between plates of equal sites).
    plate_data: dict[str, dict] = {}
    for plate1, plate2 in itertools.combinations(plate_groups, 2):
        if plate1 is None or plate2 is None:
            continue
        nodes1, nodes2 = set(plate_groups[plate1]), set(plate_groups[plate2])
        if nodes1 < nodes2:
            plate_data[plate1] = {"parent": plate2}
        elif nodes1 >= nodes2:
            plate_data[plate2] = {"parent": plate1}
        elif nodes1 & nodes2:
            raise NotImplementedError(
                f"Overlapping non-nested plates {plate1!r},{plate2!r} are not supported by "
                "render_model()"
            )
    for plate in plate_groups:
        if plate is not None and plate not in plate_data:
            plate_data[plate] = {"parent": None}
    edge_list = [(s, t) for t, sources in relations["sample_sample"].items() for s in sources]
    if render_params:
        edge_list += [(s, t) for t, sources in relations["sample_param"].items() for s in sources]
    return {
        "plate_groups": plate_groups,
        "plate_data": plate_data,
        "node_data": node_data,
        "edge_list": edge_list,
    }


def _merge(things: list) -> Any:
    # Specifications of several runs (a semi-supervised model) as one: dicts merge key by key,
    # booleans vote (True, False, or None for "sometimes"), anything else: the first.
    if len(things) == 1:
        return things[0]
    if isinstance(things[0], dict):
        merged = {}
        for thing in things:
            for key in thing:
                if key not in merged:
                    merged[key] = _merge([t[key] for t in things])
        return merged
    if isinstance(things[0], bool):
        if all(x is True for x in things):
            return True
        if all(x is False for x in things):
            return False
        return None
    return things[0]


def _graphviz() -> Any:
    try:
        import graphviz
    except ImportError as e:
        raise ImportError(
            "render_model needs the graphviz Python package: pip install 'miniprob[render]' "
            "(or pip install graphviz)"
        ) from e
    return graphviz


def render_graph(spec: dict, render_distributions: bool = False) -> Any:
    """A ``graphviz.Digraph`` of a :func:`generate_graph_specification`: latent sites white
    ellipses, observed ones gray (half gray when observed in some runs only), deterministic
    ones dashed, params plain, plates ``cluster_<name>`` subgraphs labelled bottom right.

    Example::

        >>> spec = {"plate_groups": {None: ["a"]}, "plate_data": {}, "edge_list": [],
        ...         "node_data": {"a": {"is_observed": False, "distribution": "Normal"}}}
        >>> render_graph(spec).body
        ['\\ta [label=a fillcolor=white shape=ellipse style=filled]\\n']
    """
    graphviz = _graphviz()
    plate_groups, node_data = spec["plate_groups"], spec["node_data"]
    plate_data = dict(spec["plate_data"])
    graph = graphviz.Digraph()
    subgraphs = {p: graphviz.Digraph(name=f"cluster_{p}") for p in plate_groups if p is not None}
    for plate, subgraph in subgraphs.items():
        subgraph.attr(label=plate.split("__CLONE")[0], labeljust="r", labelloc="b")
    subgraphs[None] = graph
    colors = {False: "white", True: "gray", None: "gray:white"}
    for plate, rvs in plate_groups.items():
        for rv in rvs:
            data = node_data[rv]
            is_sample = bool(data["distribution"])
            subgraphs[plate].node(
                rv,
                label=rv if is_sample else rv.replace("$params", ""),
                shape="ellipse" if is_sample else "plain",
                style="filled,dashed" if data["distribution"] == "Deterministic" else "filled",
                fillcolor=colors[data["is_observed"]],
            )
    # Nest the plates from the leaves up: a plate enters its parent once it has no children.
    while plate_data:
        parents = {d["parent"] for d in plate_data.values()}
        leaf = next(p for p in plate_data if p not in parents)
        subgraphs[plate_data.pop(leaf)["parent"]].subgraph(subgraphs[leaf])
    for source, target in spec["edge_list"]:
        graph.edge(source, target)
    if render_distributions:
        label = ""
        for rv, data in node_data.items():
            if data["distribution"]:
                label += rf"{rv} ~ {data['distribution']}\l"
            if data.get("constraint"):
                label += rf"{rv} : {data['constraint']}\l"
        graph.node("distribution_description_node", label=label, shape="plaintext")
    return graph


def render_model(
    model: Callable,
    model_args: tuple | list[tuple] | None = None,
    model_kwargs: dict | list[dict] | None = None,
    filename: str | os.PathLike | None = None,
    render_distributions: bool = False,
    render_params: bool = False,
    render_deterministic: bool = False,
) -> Any:
    """A ``graphviz.Digraph`` of ``model``: nodes for its sample sites (and params, with
    ``render_params``), edges for dependencies, clusters for plates, as Pyro draws it.

    ``model_args`` / ``model_kwargs`` may be lists (one entry per run, for a semi-supervised
    model observed in some runs only). ``filename`` also writes the picture, in the format its
    suffix names (``.png``, ``.svg``, ``.pdf``, ...), which needs graphviz's ``dot``.
    ``render_distributions`` adds a legend of distributions (and param constraints).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     a = pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.Normal(a, 1.0))
        >>> [line.strip() for line in render_model(model).body]
        ['a [label=a fillcolor=white shape=ellipse style=filled]', \
'b [label=b fillcolor=white shape=ellipse style=filled]', 'a -> b']
    """
    graphviz = _graphviz()
    if isinstance(model_args, list) or isinstance(model_kwargs, list):
        if not isinstance(model_args, list):
            model_args = [model_args] * len(model_kwargs)
        if not isinstance(model_kwargs, list):
            model_kwargs = [model_kwargs] * len(model_args)
        if len(model_args) != len(model_kwargs):
            raise ValueError(
                f"render_model: {len(model_args)} model_args but {len(model_kwargs)} "
                "model_kwargs (one of each per run)"
            )
        runs = list(zip(model_args, model_kwargs, strict=True))
    else:
        runs = [(model_args, model_kwargs)]
    specs = [
        generate_graph_specification(
            get_model_relations(model, args, kwargs, render_deterministic), render_params
        )
        for args, kwargs in runs
    ]
    graph = render_graph(_merge(specs), render_distributions)
    if filename is not None:
        path = Path(filename)
        if not path.suffix:
            raise ValueError(
                f"render_model: filename '{filename}' has no suffix to name the format "
                "(.png, .svg, ...)"
            )
        if shutil.which("dot") is None:
            raise RuntimeError(
                f"render_model: writing '{filename}' needs graphviz's 'dot' program, which is "
                "not on the PATH (apt-get install graphviz, or see https://graphviz.org)"
            )
        try:
            graph.render(
                str(path.with_suffix("")), view=False, cleanup=True, format=path.suffix[1:]
            )
        except graphviz.backend.ExecutableNotFound as e:
            raise RuntimeError(
                f"render_model: writing '{filename}' needs graphviz's 'dot' program: {e}"
            ) from e
    return graph
