"""What a model's sites depend on: ``get_dependencies`` (prior and posterior dependencies,
with the plates that make them dense) and ``get_model_relations`` (what ``render_model``
draws).

The one mechanism is provenance tracking: each sample and param value is wrapped in a tensor
that carries the set of site names it came from, and every torch operation on such tensors
returns a tensor carrying the union of its inputs' sets (a ``__torch_function__`` override). A
site's log density computed from the recorded values then names exactly the sites it depends
on. The model runs once, under ``no_grad``, with validation off and the RNG state restored,
as in Pyro; the results are Pyro's.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> def model():
    ...     a = pyro.sample("a", dist.Normal(0.0, 1.0))
    ...     pyro.sample("b", dist.Normal(a, 1.0), obs=torch.tensor(0.0))
    >>> get_dependencies(model)["posterior_dependencies"]
    {'a': {'a': set(), 'b': set()}}
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..distributions.shape import MaskedDistribution, _Expanded
from ..poutine.handlers import trace
from ..poutine.plate import _Subsample
from ..runtime import Message, Messenger
from ..validation import _ENABLED

Site = dict[str, Any]


class _Tracked(torch.Tensor):
    """A tensor that carries ``provenance``, the names of the sites it was computed from."""

    _plain: torch.Tensor
    _provenance: frozenset

    @staticmethod
    def wrap(value: Any, provenance: frozenset) -> Any:
        if not provenance or not isinstance(value, torch.Tensor):
            return value
        if isinstance(value, _Tracked):
            provenance = provenance | value._provenance
            value = value._plain
        tracked = value.as_subclass(_Tracked)
        tracked._plain = value
        tracked._provenance = provenance
        return tracked

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        plain, provenance = _untrack((args, kwargs or {}))
        result = func(*plain[0], **plain[1])
        leaves, spec = tree_flatten(result)
        return tree_unflatten([_Tracked.wrap(leaf, provenance) for leaf in leaves], spec)

    def __repr__(self) -> str:
        return f"tracked({self._plain!r}, provenance={set(self._provenance)})"


def _untrack(data: Any) -> tuple[Any, frozenset]:
    """``data`` with plain tensors in place of tracked ones, and the union of their provenance."""
    leaves, spec = tree_flatten(data)
    provenance: frozenset = frozenset()
    plain = []
    for leaf in leaves:
        if isinstance(leaf, _Tracked):
            provenance |= leaf._provenance
            leaf = leaf._plain
        plain.append(leaf)
    return tree_unflatten(plain, spec), provenance


def provenance_of(value: Any) -> frozenset:
    """The names of the sites ``value`` (a tensor, or a structure of them) was computed from,
    while :func:`get_dependencies` tracks them.

    Example::

        >>> a = _Tracked.wrap(torch.ones(2), frozenset({"a"}))
        >>> sorted(provenance_of(a * 2 + torch.zeros(2)))
        ['a']
    """
    return _untrack(value)[1]


def _is_subsample(site: Site) -> bool:
    return site["type"] == "sample" and isinstance(site["fn"], _Subsample)


def _is_deterministic(site: Site) -> bool:
    return site["type"] == "sample" and site["infer"].get("_deterministic", False)


def _is_sample_site(site: Site, include_deterministic: bool = False) -> bool:
    if site["type"] != "sample" or _is_subsample(site):
        return False
    if not include_deterministic:
        if site["is_observed"] and site["mask"] is False:  # a masked-out observation
            return False
        fn = site["fn"]
        while hasattr(fn, "base_dist"):
            fn = fn.base_dist
        if type(fn).__name__ == "Delta":  # deterministic sites are elided
            return False
    return True


class _TrackProvenance(Messenger):
    # Each sample site's value (and each param's) becomes a tracked tensor naming that site
    # only: its own inputs' provenance is dropped, so that dependencies stay direct.
    def __init__(self, include_deterministic: bool = False) -> None:
        super().__init__()
        self.include_deterministic = include_deterministic

    def postprocess_message(self, msg: Message) -> None:
        kind = msg["type"]
        if kind == "param" or (
            kind == "sample"
            and (
                (self.include_deterministic and _is_deterministic(msg))
                or _is_sample_site(msg, self.include_deterministic)
            )
        ):
            plain, _ = _untrack(msg["value"])
            msg["value"] = _Tracked.wrap(plain, frozenset({msg["name"]}))


def _tracked_trace(
    model: Callable,
    model_args: tuple | None,
    model_kwargs: dict | None,
    include_deterministic: bool,
):
    model_args = () if model_args is None else model_args
    model_kwargs = {} if model_kwargs is None else model_kwargs
    if not isinstance(model_args, tuple):
        raise TypeError(f"model_args should be a tuple, got {type(model_args).__name__}")
    if not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs should be a dict, got {type(model_kwargs).__name__}")
    was_enabled = _ENABLED[0]
    _ENABLED[0] = False
    try:
        with torch.random.fork_rng(), torch.no_grad():
            with _TrackProvenance(include_deterministic):
                return trace(model).get_trace(*model_args, **model_kwargs)
    finally:
        _ENABLED[0] = was_enabled


def get_dependencies(
    model: Callable,
    model_args: tuple | None = None,
    model_kwargs: dict | None = None,
    include_deterministic: bool = False,
) -> dict[str, dict[str, dict[str, set[str]]]]:
    """The dependency structure of a (conditioned) model, as Pyro's.

    Returns ``{"prior_dependencies": ..., "posterior_dependencies": ...}``: the first maps each
    latent and observed site to the upstream latent sites it depends on (itself included),
    the second each latent site to the sites it depends on in the posterior (reversed, and
    moralized: two parents of one child depend on each other). Each dependency comes with the
    set of plates across which it is dense (all-to-all, not element-wise). Deterministic and
    ``Delta`` sites are elided.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     with pyro.plate("p", 5):
        ...         a = pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.Normal(a.sum(), 1.0), obs=torch.tensor(0.0))
        >>> get_dependencies(model)["posterior_dependencies"]
        {'a': {'a': {'p'}, 'b': set()}}
    """
    tr = _tracked_trace(model, model_args, model_kwargs, include_deterministic)
    sites = [site for site in tr.nodes.values() if _is_sample_site(site)]
    observed = {site["name"] for site in sites if site["is_observed"]}
    plates = {
        site["name"]: {f.name for f in site["cond_indep_stack"] if f.vectorized} for site in sites
    }
    prior: dict[str, dict[str, set[str]]] = {name: {name: set()} for name in plates}
    for i, downstream in enumerate(sites):
        upstreams = [u for u in sites[:i] if not u["is_observed"] and u["value"].numel()]
        if not upstreams:
            continue
        provenance = provenance_of(downstream["fn"].log_prob(downstream["value"]))
        for upstream in upstreams:
            if upstream["name"] in provenance:
                prior[downstream["name"]][upstream["name"]] = set()
    # Reverse the edges, keeping latent sites downstream.
    posterior: dict[str, dict[str, set[str]]] = {n: {} for n in plates if n not in observed}
    for d, upstreams in prior.items():
        for u, dense in upstreams.items():
            if u not in observed:
                posterior[u][d] = dense.copy()
    # Moralize: latent parents of one site depend on each other (and, across the plates they
    # share but the child lacks, on themselves).
    order = {site["name"]: i for i, site in enumerate(reversed(sites))}
    for d, upstreams in prior.items():
        latent = {u: dense for u, dense in upstreams.items() if u not in observed}
        for u1, p1 in latent.items():
            for u2, p2 in latent.items():
                if order[u1] <= order[u2]:
                    dense = posterior[u2].setdefault(u1, set())
                    dense |= plates[u1] & plates[u2] - plates[d]
                    dense |= plates[u2] & p1
                    dense |= plates[u1] & p2
    return {"prior_dependencies": prior, "posterior_dependencies": posterior}


def _distribution_name(fn: Any) -> str:
    while isinstance(fn, (torch.distributions.Independent, _Expanded, MaskedDistribution)):
        fn = fn.base_dist
    return type(fn).__name__


def _split_overlapping_plates(plate_sample: dict[str, list[str]]) -> dict[str, Any]:
    # Two plates whose sites overlap without nesting: the second splits into the shared part
    # and a clone holding the rest (as Pyro draws them).
    for p_sites in plate_sample.values():
        pv = set(p_sites)
        for q, q_sites in plate_sample.items():
            qv = set(q_sites)
            if pv & qv and pv - qv and qv - pv:
                split = dict(plate_sample)
                split[q] = pv & qv
                split[q + "__CLONE"] = qv - pv
                return _split_overlapping_plates(split)
    return plate_sample


def get_model_relations(
    model: Callable,
    model_args: tuple | None = None,
    model_kwargs: dict | None = None,
    include_deterministic: bool = False,
) -> dict[str, Any]:
    """The relations among a model's sites and plates, as Pyro's: ``sample_sample`` (each
    sample site's upstream sample sites), ``sample_param`` (its params), ``sample_dist`` (its
    distribution's name), ``param_constraint``, ``plate_sample`` (each plate's sites) and
    ``observed``.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> def model(data):
        ...     m = pyro.sample("m", dist.Normal(0.0, 1.0))
        ...     sd = pyro.sample("sd", dist.LogNormal(m, 1.0))
        ...     with pyro.plate("N", len(data)):
        ...         pyro.sample("obs", dist.Normal(m, sd), obs=data)
        >>> relations = get_model_relations(model, (torch.ones(3),))
        >>> relations["sample_sample"], relations["plate_sample"]
        ({'m': [], 'sd': ['m'], 'obs': ['m', 'sd']}, {'N': ['obs']})
    """
    tr = _tracked_trace(model, model_args, model_kwargs, include_deterministic)
    sample_sample, sample_param, sample_dist, param_constraint = {}, {}, {}, {}
    plate_sample: dict[str, list[str]] = defaultdict(list)
    observed = []
    for name, site in tr.nodes.items():
        if site["type"] == "param":
            param_constraint[name] = str(site["kwargs"]["constraint"])
        if site["type"] != "sample" or _is_subsample(site):
            continue
        deterministic = _is_deterministic(site)
        fn = site["fn"].base_dist if deterministic else site["fn"]
        provenance = provenance_of(fn.log_prob(site["value"]))
        upstream = [u for u in provenance if u != name]
        sample_sample[name] = [u for u in upstream if tr.nodes[u]["type"] == "sample"]
        sample_param[name] = [u for u in upstream if tr.nodes[u]["type"] == "param"]
        sample_dist[name] = "Deterministic" if deterministic else _distribution_name(site["fn"])
        for frame in site["cond_indep_stack"]:
            plate_sample[frame.name].append(name)
        if site["is_observed"]:
            observed.append(name)
    plates = _split_overlapping_plates(plate_sample)

    def in_model_order(names: Iterable[str]) -> list[str]:
        names = set(names)
        return [name for name in tr.nodes if name in names]

    return {
        "sample_sample": {k: in_model_order(v) for k, v in sample_sample.items()},
        "sample_param": {k: in_model_order(v) for k, v in sample_param.items()},
        "sample_dist": sample_dist,
        "param_constraint": param_constraint,
        "plate_sample": {k: in_model_order(v) for k, v in plates.items()},
        "observed": in_model_order(observed),
    }
