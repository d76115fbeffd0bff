"""``Trace``: the record of one run of a model, an ordered ``{name: site}`` dict, and a directed
graph over its sites (Pyro's graph API: ``add_edge``, ``successors``, ``topological_sort``, ...).

A flat trace (the default, what inference runs on) has no edges and pays nothing for the graph:
the edge sets hold only the sites that have an edge, so recording a site costs one dict write.
A ``"dense"`` trace gets Pyro's edges when its ``trace`` handler exits (see
:func:`miniprob.poutine.handlers.identify_dense_edges`).

Example::

    >>> import miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob import poutine
    >>> tr = poutine.trace(lambda: pyro.sample("x", dist.Normal(0.0, 1.0))).get_trace()
    >>> list(tr.keys()), tr.log_prob_sum().shape
    (['_INPUT', 'x', '_RETURN'], torch.Size([]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..distributions.shape import MaskedDistribution
from ..validation import _ENABLED as _VALIDATION
from ..validation import check_observed

Site = dict[str, Any]


def scale_and_mask(tensor: torch.Tensor, scale: Any = 1.0, mask: Any = None) -> torch.Tensor:
    """``tensor * scale``, zeroed where ``mask`` (a bool tensor, or a bool) is False (the same
    arithmetic as Pyro)."""
    if mask is None or mask is True:
        if type(scale) in (float, int) and scale == 1:
            return tensor
        return tensor * scale
    if mask is False:
        return torch.zeros_like(tensor)
    return torch.where(mask, tensor * scale, tensor.new_zeros(()))


def _check_mask(name: str, mask: torch.Tensor, log_p: torch.Tensor) -> None:
    """Raise unless ``mask`` broadcasts to the shape of the site's log density without
    repeating it (leading dims of size 1 are fine)."""
    try:
        shape = torch.broadcast_shapes(mask.shape, log_p.shape)
    except RuntimeError:
        shape = None
    if shape is None or math.prod(shape) != log_p.numel():
        raise ValueError(
            f"sample site '{name}': the mask of shape {tuple(mask.shape)} does not fit its log "
            f"density of shape {tuple(log_p.shape)}; expected a mask that broadcasts to "
            f"{tuple(log_p.shape)}"
        )


def _all_sites(name: str, site: Site) -> bool:
    return True


class DuplicateSiteError(ValueError, RuntimeError):
    """Two sites of one trace share a name. A ``RuntimeError`` as in Pyro, and a ``ValueError``
    as miniprob raised before."""


def _duplicate_site_error(name: str, kind: str, old_kind: str) -> DuplicateSiteError:
    # Pyro's two messages first (its tests match on them), then what to do.
    if kind == old_kind:
        said = f"Multiple {kind} sites named '{name}'"
    else:
        said = f"{name} is already in the trace as a {old_kind}"
    return DuplicateSiteError(
        f"{said}: duplicate {kind} site named '{name}' (already in the trace as a {old_kind} "
        "site); each site in a model or guide needs a unique name (inside a loop, put the index "
        "in the name)"
    )


class Trace:
    """An ordered record of the sites of one run, and a directed graph over them.

    ``nodes`` maps names to site dicts with the message fields (``type, name, fn, value, scale,
    mask, cond_indep_stack, infer, ...``). A ``Trace`` also reads like that dict itself.

    :param graph_type: ``"flat"`` (no edges recorded) or ``"dense"`` (the ``trace`` handler adds
        an edge from each sample site to every later one that is not independent of it).

    Example::

        >>> tr = Trace()
        >>> tr.add_edge("a", "b"); tr.add_edge("a", "c"); tr.add_edge("c", "b")
        >>> tr.topological_sort(), sorted(tr.successors("a"))
        (['a', 'c', 'b'], ['b', 'c'])
    """

    def __init__(self, graph_type: str = "flat") -> None:
        if graph_type not in ("flat", "dense"):
            raise ValueError(f"{graph_type} not a valid graph type: expected 'flat' or 'dense'")
        self.graph_type = graph_type
        self.nodes: dict[str, Site] = {}
        # Successors and predecessors of the sites that have been given any (a site absent here
        # has none): a flat trace never touches them.
        self._succ: dict[str, set[str]] = {}
        self._pred: dict[str, set[str]] = {}

    def add_node(self, site_name: str, **site: Any) -> None:
        """Record a site; two sites with one name are an error unless both are params."""
        self.add_site(site_name, site)

    def add_site(self, site_name: str, site: Site) -> None:
        """:meth:`add_node` for a site already in a dict (kept as it is, not copied)."""
        old = self.nodes.get(site_name)
        if old is not None:
            if site["type"] != "param" or old["type"] != "param":
                raise _duplicate_site_error(site_name, site["type"], old["type"])
            # A param recorded again replaces the old record, edges included (as in Pyro).
            self._drop_edges(site_name)
        self.nodes[site_name] = site

    # the graph
    @property
    def edges(self) -> Iterator[tuple[str, str]]:
        """Each edge ``(site, successor)``, sites in trace order."""
        for site in self.nodes:
            for successor in self._succ.get(site, ()):
                yield site, successor

    def add_edge(self, site1: str, site2: str) -> None:
        """An edge from ``site1`` to ``site2``; a site not in the trace is added, empty."""
        for site in (site1, site2):
            if site not in self.nodes:
                self.nodes[site] = {}
        self.successors(site1).add(site2)
        self.predecessors(site2).add(site1)

    def remove_node(self, site_name: str) -> None:
        """Remove a site and its edges (``KeyError`` when there is no such site)."""
        del self.nodes[site_name]
        self._drop_edges(site_name)

    def _drop_edges(self, site_name: str) -> None:
        for p in self._pred.pop(site_name, ()):
            self._succ[p].discard(site_name)
        for s in self._succ.pop(site_name, ()):
            self._pred[s].discard(site_name)

    def predecessors(self, site_name: str) -> set[str]:
        """The sites with an edge to ``site_name`` (a live set, as in Pyro)."""
        return self._edge_set(self._pred, site_name)

    def successors(self, site_name: str) -> set[str]:
        """The sites ``site_name`` has an edge to (a live set, as in Pyro)."""
        return self._edge_set(self._succ, site_name)

    def _edge_set(self, edges: dict[str, set[str]], site_name: str) -> set[str]:
        """``edges[site_name]``, made empty on first use (``KeyError`` when there is no site)."""
        names = edges.get(site_name)
        if names is None:
            if site_name not in self.nodes:
                raise KeyError(site_name)
            names = edges[site_name] = set()
        return names

    def _dfs(self, site: str, visited: set[str]) -> Iterator[str]:
        """The sites reachable from ``site`` and not in ``visited``, each after all its
        successors (post-order), added to ``visited`` as they are given. Iterative, so a long
        chain of sites does not hit Python's recursion limit."""
        if site in visited:
            return
        stack = [(site, iter(self._succ.get(site, ())))]
        on_stack = {site}
        while stack:
            node, children = stack[-1]
            for child in children:
                if child in visited:
                    continue
                if child in on_stack:
                    raise ValueError(
                        f"the trace's graph has a cycle through sites '{node}' and '{child}'"
                    )
                stack.append((child, iter(self._succ.get(child, ()))))
                on_stack.add(child)
                break
            else:
                stack.pop()
                on_stack.discard(node)
                visited.add(node)
                yield node

    def topological_sort(self, reverse: bool = False) -> list[str]:
        """The site names, each before its successors (after them with ``reverse=True``)."""
        visited: set[str] = set()
        order = [node for site in self.nodes for node in self._dfs(site, visited)]
        return order if reverse else order[::-1]

    # dict-like reading
    def __getitem__(self, name: str) -> Site:
        return self.nodes[name]

    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def keys(self):
        return self.nodes.keys()

    def values(self):
        return self.nodes.values()

    def items(self):
        return self.nodes.items()

    def copy(self) -> Trace:
        """A copy with its own site dicts (their values shared) and its own edge sets."""
        new = Trace(self.graph_type)
        new.nodes = {name: dict(site) for name, site in self.nodes.items()}
        new._succ = {name: set(sites) for name, sites in self._succ.items()}
        new._pred = {name: set(sites) for name, sites in self._pred.items()}
        return new

    def detach_(self) -> None:
        """Detach every site value from the autograd graph, in place."""
        for site in self.nodes.values():
            if site["type"] == "sample" and isinstance(site["value"], torch.Tensor):
                site["value"] = site["value"].detach()

    # site groups
    @property
    def stochastic_nodes(self) -> list[str]:
        return [n for n, s in self.nodes.items() if s["type"] == "sample" and not s["is_observed"]]

    def iter_stochastic_nodes(self) -> Iterator[tuple[str, Site]]:
        """``(name, site)`` for each sample site that is not observed, in order (as Pyro's).

        Example::

            >>> import miniprob as pyro, miniprob.distributions as dist
            >>> from miniprob import poutine
            >>> tr = poutine.trace(lambda: pyro.sample("z", dist.Normal(0.0, 1.0))).get_trace()
            >>> [name for name, _ in tr.iter_stochastic_nodes()]
            ['z']
        """
        for name, site in self.nodes.items():
            if site["type"] == "sample" and not site["is_observed"]:
                yield name, site

    @property
    def reparameterized_nodes(self) -> list[str]:
        return [
            n
            for n, s in self.nodes.items()
            if s["type"] == "sample"
            and not s["is_observed"]
            and getattr(s["fn"], "has_rsample", False)
        ]

    @property
    def nonreparam_stochastic_nodes(self) -> list[str]:
        reparam = set(self.reparameterized_nodes)
        return [n for n in self.stochastic_nodes if n not in reparam]

    @property
    def observation_nodes(self) -> list[str]:
        return [n for n, s in self.nodes.items() if s["type"] == "sample" and s["is_observed"]]

    @property
    def param_nodes(self) -> list[str]:
        return [n for n, s in self.nodes.items() if s["type"] == "param"]

    # log densities
    def _site_log_prob(self, name: str, site: Site, computing: str = "log_prob") -> torch.Tensor:
        try:
            if site["is_observed"] and _VALIDATION[0]:
                # An observation is checked here, where Pyro's distributions check it (it was
                # recorded unchecked): the error carries Pyro's wording and the shape table.
                check_observed(name, site["fn"], site["value"])
            log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
        except (ValueError, RuntimeError) as e:
            # Pyro's message and shape table, then the shapes and plates in words.
            fn = site["fn"]
            details = (
                f"value shape {tuple(getattr(site['value'], 'shape', ()))}, distribution "
                f"batch shape {tuple(getattr(fn, 'batch_shape', ()))}, "
                f"event shape {tuple(getattr(fn, 'event_shape', ()))}"
            ) + "".join(
                f"; inside plate '{f.name}' (size {f.size}, dim {f.dim})"
                for f in site.get("cond_indep_stack", ())
                if f.dim is not None
            )
            raise ValueError(
                f"Error while computing {computing} at site '{name}':\n{e}\n"
                f"{self.format_shapes(last_site=name)}\n{details}"
            ) from e
        site["unscaled_log_prob"] = log_p
        mask = site["mask"]
        if isinstance(mask, torch.Tensor) and mask.dim() and mask.shape != log_p.shape:
            _check_mask(name, mask, log_p)
        log_p = scale_and_mask(log_p, site["scale"], mask)
        site["log_prob"] = log_p
        # A scalar is its own sum: skipping the op keeps one node out of the graph.
        site["log_prob_sum"] = log_p if log_p.dim() == 0 else log_p.sum()
        return log_p

    def compute_log_prob(self, site_filter: Callable[[str, Site], bool] | None = None) -> None:
        """Store ``log_prob`` (scaled, masked), ``unscaled_log_prob`` and ``log_prob_sum``."""
        site_filter = site_filter or _all_sites
        for name, site in self.nodes.items():
            if site["type"] == "sample" and "log_prob" not in site and site_filter(name, site):
                self._site_log_prob(name, site)

    def log_prob_sum(self, site_filter: Callable[[str, Site], bool] | None = None) -> torch.Tensor:
        """The sum of the scaled, masked log densities of the sample sites that pass the filter."""
        site_filter = site_filter or _all_sites
        result = 0.0
        for name, site in self.nodes.items():
            if site["type"] == "sample" and site_filter(name, site):
                if "log_prob_sum" not in site:
                    self._site_log_prob(name, site, "log_prob_sum")
                result = result + site["log_prob_sum"]
        return result

    def compute_score_parts(self) -> None:
        """For each sample site, ``score_parts = (log_prob, score_function, entropy_term)``.

        Reparameterized sites carry their log density in the entropy term (pathwise
        gradients); the others in the score-function term, unscaled and unmasked (scale,
        ``poutine.mask`` and a tensor ``.mask()`` weight only the costs it multiplies, as in
        Pyro).
        """
        for name, site in self.nodes.items():
            if site["type"] == "sample" and "score_parts" not in site:
                log_p = site.get("log_prob")
                if log_p is None:
                    log_p = self._site_log_prob(name, site, "score_parts")
                fn = site["fn"]
                if fn.has_rsample:
                    site["score_parts"] = (log_p, 0, log_p)
                elif isinstance(fn, MaskedDistribution):
                    score = fn.score_function_log_prob(site["value"])
                    site["score_parts"] = (log_p, score, 0)
                else:
                    site["score_parts"] = (log_p, site["unscaled_log_prob"], 0)

    def format_shapes(self, title: str = "Trace Shapes:", last_site: str | None = None) -> str:
        """Pyro's table of shapes, character for character: each param's shape, and for each
        sample site the batch | event shapes of its distribution and value (and of its
        ``log_prob``, once computed), up to ``last_site`` when given.

        Example::

            >>> import torch, miniprob as pyro, miniprob.distributions as dist
            >>> from miniprob import poutine
            >>> def model():
            ...     pyro.param("w", torch.ones(3))
            ...     with pyro.plate("data", 5):
            ...         pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            >>> table = poutine.trace(model).get_trace().format_shapes()
            >>> print(table)  # doctest: +NORMALIZE_WHITESPACE
            Trace Shapes:
             Param Sites:
                        w   3
            Sample Sites:
                data dist   |
                    value 5 |
                   x dist 5 | 2
                    value 5 | 2
        """
        if not self.nodes:
            return title
        rows: list[list[str | None]] = [[title], ["Param Sites:"]]
        for name, site in self.nodes.items():
            if site.get("type") == "param":
                rows.append([name, None, *map(str, site["value"].shape)])
            if name == last_site:
                break
        rows.append(["Sample Sites:"])
        for name, site in self.nodes.items():
            if site.get("type") == "sample":
                batch_shape = getattr(site["fn"], "batch_shape", ())
                event_shape = getattr(site["fn"], "event_shape", ())
                rows.append([f"{name} dist", None, *map(str, batch_shape), "|", None])
                rows[-1] += map(str, event_shape)
                shape = getattr(site["value"], "shape", ())
                split = len(shape) - len(event_shape)
                rows.append(["value", None, *map(str, shape[:split]), "|", None])
                rows[-1] += map(str, shape[split:])
                if "log_prob" in site:
                    log_prob_shape = getattr(site["log_prob"], "shape", ())
                    rows.append(["log_prob", None, *map(str, log_prob_shape), "|", None])
            if name == last_site:
                break
        return _format_table(rows)


def _format_table(rows: list[list[str | None]]) -> str:
    """Pyro's layout: ``None`` splits a row into three groups of cells (names, batch dims,
    event dims); the first two groups are aligned on their right, the third on its left, and
    every column of cells is right-justified to its widest cell."""
    groups = []
    for row in rows:
        split: list[list[str]] = [[], [], []]
        j = 0
        for cell in row:
            if cell is None:
                j += 1
            else:
                split[j].append(cell)
        groups.append(split)
    widths = [max(len(g[j]) for g in groups) for j in range(3)]
    table = [
        [""] * (widths[0] - len(names))
        + names
        + [""] * (widths[1] - len(batch))
        + batch
        + event
        + [""] * (widths[2] - len(event))
        for names, batch, event in groups
    ]
    cell_widths = [max(len(cell) for cell in column) for column in zip(*table, strict=True)]
    return "\n".join(
        " ".join(cell.rjust(w) for cell, w in zip(row, cell_widths, strict=True)) for row in table
    )
