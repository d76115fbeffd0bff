"""``TraceEnum_ELBO``: the ELBO with enumerated discrete sites summed out exactly.

One run of the guide and of the model under :class:`~miniprob.poutine.enum` gives log densities
with a dim per enumerated variable. Each is named (:func:`site_factor`), then, as in Pyro:

- the model sites that depend on a variable the *model* enumerates become factors of a plated
  factor graph, and :func:`~miniprob.infer.enum.contract.contract_tree` sums those variables
  out (unscaled and masked inside the log, the common subsampling scale outside);
- every other model site, and minus every guide site, is a cost;
- each cost is weighted by the guide's probability of the values it is computed at (the
  variables the *guide* enumerates) and, for sampled guide sites it may depend on (those not
  in a plate the cost is not in), by the DiCE factor ``exp(log q - log q.detach())``, which is
  1 but has the score function as its gradient.

The surrogate's gradients are then Pyro's ``TraceEnum_ELBO`` gradients.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import TraceEnum_ELBO, config_enumerate
    >>> @config_enumerate
    ... def model(data):
    ...     z = pyro.sample("z", dist.Bernoulli(0.5))
    ...     pyro.sample("x", dist.Normal(z * 2.0, 1.0), obs=data)
    >>> def guide(data):
    ...     pass
    >>> loss = TraceEnum_ELBO(max_plate_nesting=0).loss(model, guide, torch.tensor(1.0))
    >>> expected = -torch.logsumexp(dist.Normal(torch.tensor([0.0, 2.0]), 1.0).log_prob(
    ...     torch.tensor(1.0)) + torch.tensor(0.5).log(), 0).item()
    >>> abs(loss - expected) < 1e-6
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from queue import LifoQueue
from typing import Any

import torch

from ...poutine.enum_messenger import enum
from ...poutine.escape import queue
from ...poutine.handlers import block, replay, trace
from ...poutine.plate import prune_subsample_sites
from ...poutine.trace_struct import Trace, scale_and_mask
from ...validation import is_validation_enabled
from ..elbo import ELBO, VALUES_READABLE, check_model_guide_match
from ..jit_elbo import _CapturedELBO
from .contract import Factor, align, contract_tree, sumproduct


def site_factor(
    name: str, site: dict, tensor: torch.Tensor, dims: dict[int, str], max_plate_nesting: int
) -> Factor:
    """``tensor`` (a site's log density, in the site's batch layout) with its dims named:
    the plates' names right of ``max_plate_nesting``, the enumerated variables' (``dims``)
    left of it; dims of size 1 are dropped.

    Example::

        >>> import torch
        >>> site = {"cond_indep_stack": ()}
        >>> site_factor("x", site, torch.zeros(3, 1), {-2: "z"}, 1).dims
        ('z',)
    """
    plates = {f.dim: f.name for f in site["cond_indep_stack"] if f.dim is not None}
    names, kept = [], []
    ndim = tensor.dim()
    for i, size in enumerate(tensor.shape):
        if size == 1:
            continue
        pos = i - ndim
        label = plates.get(pos) if -pos <= max_plate_nesting else dims.get(pos)
        if label is None:
            held = "plate" if -pos <= max_plate_nesting else "enumerated variable it depends on"
            raise ValueError(
                f"site '{name}': its log density has size {size} at dim {pos}, but no {held} "
                f"holds that dim (max_plate_nesting={max_plate_nesting}; does the site depend "
                "on a variable outside its pyro.markov history, or on a batched tensor outside "
                "a plate?)"
            )
        names.append(label)
        kept.append(i)
    if len(kept) != ndim:
        tensor = tensor.squeeze(tuple(i for i in range(ndim) if i not in kept))
    return Factor(tensor, tuple(names))


def _ordinal(site: dict) -> frozenset:
    return frozenset(f.name for f in site["cond_indep_stack"] if f.vectorized)


def _common_scale(scales: list, names: list[str]) -> float | torch.Tensor:
    values = set()
    for scale, name in zip(scales, names, strict=True):
        if isinstance(scale, torch.Tensor) and scale.dim():
            raise ValueError(
                f"site '{name}': enumeration supports only a scalar poutine.scale, got a "
                f"scale of shape {tuple(scale.shape)}"
            )
        values.add(float(scale))
    if len(values) != 1:
        raise ValueError(
            "the sites of an enumerated model part must share one scale (subsampling factor), "
            f"but {names} have the scales {sorted(values)}"
        )
    return scales[0]


def _check_enumerated_support(model_trace: Trace, guide_trace: Trace) -> None:
    """An enumerated guide site must have the model site's support."""
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["infer"].get("_enumerate_dim") is None:
            continue
        model_site = model_trace.nodes.get(name)
        if model_site is None:
            continue
        model_fn, guide_fn = model_site["fn"], site["fn"]
        guide_support = guide_fn.enumerate_support(expand=False)
        if not getattr(model_fn, "has_enumerate_support", False):
            raise ValueError(
                f"site '{name}' is enumerated in the guide over {len(guide_support)} values, "
                f"but the model's {type(model_fn).__name__} there has no finite support"
            )
        model_support = model_fn.enumerate_support(expand=False)
        same = len(model_support) == len(guide_support) and torch.equal(
            model_support.reshape(len(model_support), -1)[:, 0],
            guide_support.reshape(len(guide_support), -1)[:, 0].to(model_support.dtype),
        )
        if not same:
            raise ValueError(
                f"site '{name}' is enumerated in the guide over the support "
                f"{guide_support.reshape(len(guide_support), -1)[:, 0].tolist()} "
                f"({type(guide_fn).__name__}), but the model's {type(model_fn).__name__} has "
                f"the support {model_support.reshape(len(model_support), -1)[:, 0].tolist()}"
            )


class TraceEnum_ELBO(ELBO):
    """The ELBO with the sites marked ``infer={"enumerate": "parallel"}`` summed out exactly,
    in the model and in the guide (see the module docstring); Pyro's ``TraceEnum_ELBO``.

    ``max_plate_nesting`` must cover every plate of the model and guide: enumeration uses the
    dims left of it. Guide sites marked ``"sequential"`` are enumerated one value per run of
    the guide (``poutine.queue``), each run's ELBO weighted by their probabilities, as Pyro
    does; in the model only parallel enumeration is supported.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain_guides: set[int] = set()  # ids of guides seen without sequential sites

    def _get_traces(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> Iterator[tuple[Trace, Trace]]:
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        unwrapped = guide
        if self.vectorize_particles and self.num_particles > 1:
            model, guide = self._particle_plate(model), self._particle_plate(guide)
        # The guide runs under its enum handler, itself under a queue of partial traces that
        # enumerates the sequential sites: one complete run (one trace pair) per combination.
        guide_enum = enum(first_available_dim=-1 - int(self.max_plate_nesting))(guide)
        pending = LifoQueue()
        queued = queue(
            guide_enum, queue=pending, escape_fn=_sequential_escape, extend_fn=_sequential_extend
        )
        plain, key = self._plain_guides, id(unwrapped)
        for _ in range(1 if self.vectorize_particles else self.num_particles):
            # A guide that showed no sequential site runs without the queue's extra handlers;
            # should one appear after all, that run is dropped and the queue takes over.
            if key in plain:
                pair = self._get_trace(model, guide_enum, guide_enum, args, kwargs)
                if not _has_sequential(pair[1]):
                    yield pair
                    continue
                plain.discard(key)
            pending.put(Trace())
            while not pending.empty():
                pair = self._get_trace(model, queued, guide_enum, args, kwargs)
                if not _has_sequential(pair[1]):
                    plain.add(key)
                yield pair

    def _get_trace(
        self, model: Callable, guide: Callable, guide_enum: enum, args: tuple, kwargs: dict
    ) -> tuple[Trace, Trace]:
        mpn = int(self.max_plate_nesting)
        guide_trace = trace(guide).get_trace(*args, **kwargs)
        # The model's enumeration dims continue left of the guide's (one allocator).
        with enum() as model_enum:
            model_trace = trace(replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, mpn, self._checked_pairs)
            _check_enumerated_support(model_trace, guide_trace)
        guide_trace = prune_subsample_sites(guide_trace)
        model_trace = prune_subsample_sites(model_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        if is_validation_enabled():
            enumerated = False
            for tr in (model_trace, guide_trace):
                for site in tr.nodes.values():
                    if site["type"] == "sample":
                        self._check_site_shape(site)
                        sequential = site["infer"].get("enumerate") == "sequential"
                        if sequential and site["name"] not in guide_trace.nodes:
                            raise NotImplementedError(
                                f"site '{site['name']}': sequential enumeration is supported "
                                "in the guide only; use infer={'enumerate': 'parallel'} in "
                                "the model"
                            )
                        enumerated = enumerated or bool(site["infer"].get("enumerate"))
            if self.strict_enumeration_warning and not enumerated:
                warnings.warn(
                    "TraceEnum_ELBO found no sample sites configured for enumeration; mark "
                    "discrete sites infer={'enumerate': 'parallel'} or use config_enumerate",
                    stacklevel=4,
                )
        model_trace._site_dims = model_enum.site_dims
        guide_trace._site_dims = guide_enum.site_dims
        return model_trace, guide_trace

    def compute_marginals(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> dict:
        """The posterior marginal of each site the model enumerates, given one run of the
        guide: a distribution of the site's own type (``Categorical``, ``Bernoulli``, ...)
        with a batch dim per plate of the site, as Pyro's ``compute_marginals``.

        Example::

            >>> import torch, miniprob as pyro, miniprob.distributions as dist
            >>> def model():
            ...     z = pyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
            ...     pyro.sample("x", dist.Normal(3.0 * z, 1.0), obs=torch.tensor(3.0))
            >>> marginal = TraceEnum_ELBO(max_plate_nesting=0).compute_marginals(
            ...     model, lambda: None)["z"]
            >>> round(marginal.probs.item(), 4)   # 1 / (1 + exp(-4.5))
            0.989
        """
        self._check_one_particle("compute_marginals")
        with torch.no_grad():
            model_trace, guide_trace = next(iter(self._get_traces(model, guide, args, kwargs)))
        _check_guide_not_enumerated(
            guide_trace,
            "compute_marginals",
            "marginals are computed for sites the model enumerates",
        )
        return _marginals(model_trace, guide_trace, int(self.max_plate_nesting))

    def sample_posterior(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run ``model`` on one run of the guide with its enumerated sites drawn jointly from
        their posterior (``infer_discrete`` at temperature 1); returns what the model returns,
        as Pyro's ``sample_posterior``.

        Example::

            >>> import torch, miniprob as pyro, miniprob.distributions as dist
            >>> def model():
            ...     z = pyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
            ...     pyro.sample("x", dist.Normal(30.0 * z, 1.0), obs=torch.tensor(30.0))
            ...     return z
            >>> TraceEnum_ELBO(max_plate_nesting=0).sample_posterior(model, lambda: None).item()
            1.0
        """
        from .discrete import infer_discrete  # (discrete.py builds on this module)

        self._check_one_particle("sample_posterior")
        with block(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Found vars in model but not guide")
            _, guide_trace = next(iter(self._get_traces(model, guide, args, kwargs)))
        _check_guide_not_enumerated(
            guide_trace, "sample_posterior", "only the sites the model enumerates are drawn"
        )
        first = -1 - int(self.max_plate_nesting)
        posterior = infer_discrete(replay(model, trace=guide_trace), first_available_dim=first)
        return posterior(*args, **kwargs)

    def _check_one_particle(self, method: str) -> None:
        """``method`` works on one run of the model and guide: ``num_particles`` must be 1."""
        if self.num_particles != 1:
            raise NotImplementedError(
                f"TraceEnum_ELBO.{method}() works with num_particles=1, got {self.num_particles}"
            )

    def _differentiable_loss_particle(
        self, model_trace: Trace, guide_trace: Trace
    ) -> tuple[torch.Tensor, torch.Tensor]:
        elbo = compute_enum_elbo(model_trace, guide_trace, int(self.max_plate_nesting))
        if not isinstance(elbo, torch.Tensor):
            elbo = torch.tensor(float(elbo))
        return -elbo.detach(), -elbo


def _check_guide_not_enumerated(guide_trace: Trace, method: str, instead: str) -> None:
    """``method`` handles only the sites the model enumerates: no guide site may be."""
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and site["infer"].get("enumerate"):
            raise NotImplementedError(
                f"TraceEnum_ELBO.{method}(): guide site '{name}' is enumerated; {instead}"
            )


def _has_sequential(guide_trace: Trace) -> bool:
    return any(
        site["type"] == "sample" and site["infer"].get("enumerate") == "sequential"
        for site in guide_trace.nodes.values()
    )


def _sequential_escape(partial: Trace, msg: dict) -> bool:
    """Stop at a guide site to enumerate sequentially that the partial trace lacks."""
    return (
        msg["type"] == "sample"
        and not msg["is_observed"]
        and msg["infer"].get("enumerate") == "sequential"
        and msg["name"] not in partial
    )


def _sequential_extend(partial: Trace, msg: dict, num_samples: int | None = None) -> list[Trace]:
    """One copy of ``partial`` per value of the site ``msg``, each knowing how many there are."""
    fn = msg["fn"]
    if not getattr(fn, "has_enumerate_support", False):
        raise ValueError(
            f"site '{msg['name']}' is marked for enumeration, but its distribution "
            f"{type(fn).__name__} has no finite support to enumerate"
        )
    values = fn.enumerate_support(expand=msg["infer"].get("expand", False))
    extended = []
    for value in values:
        site = dict(msg, value=value, infer=dict(msg["infer"], _enum_total=len(values)))
        copy = partial.copy()
        copy.add_site(msg["name"], site)
        extended.append(copy)
    return extended


def _model_factors(model_trace: Trace, guide_trace: Trace, mpn: int) -> tuple:
    """The model's log densities by ordinal, split as in Pyro's ``_compute_model_factors``:
    ``(costs, factors, enumerated variables, scale)``, where the factors are those that depend
    on a variable the model enumerates (unscaled, masked) and ``scale`` their common scale."""
    dims_of = model_trace._site_dims
    guide_dims_of = guide_trace._site_dims
    cost_sites, enum_sites = [], []
    non_enum: set = set()
    enum_vars: set = set()
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        non_enum |= _ordinal(site)
        guide_site = guide_trace.nodes.get(name)
        if guide_site is not None:
            non_enum |= _ordinal(guide_site)
            lp = guide_site["log_prob"]
            non_enum.update(site_factor(name, guide_site, lp, guide_dims_of[name], mpn).dims)
            cost_sites.append((name, site))
        elif site["infer"].get("_enumerate_dim") is None:
            cost_sites.append((name, site))
        else:
            enum_sites.append((name, site))
            lp = site["unscaled_log_prob"]
            enum_vars.update(site_factor(name, site, lp, dims_of[name], mpn).dims)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            non_enum |= _ordinal(site)
    enum_vars -= non_enum
    costs: dict[frozenset, list[Factor]] = {}
    factors: dict[frozenset, list[Factor]] = {}
    scales, scaled_names = [], []
    for name, site in cost_sites:
        cost = site_factor(name, site, site["log_prob"], dims_of[name], mpn)
        if enum_vars.isdisjoint(cost.dims):
            costs.setdefault(_ordinal(site), []).append(cost)
            continue
        # Inside the log the mask, outside it the scale (the log of a sum is not linear).
        masked = scale_and_mask(site["unscaled_log_prob"], mask=site["mask"])
        factors.setdefault(_ordinal(site), []).append(
            site_factor(name, site, masked, dims_of[name], mpn)
        )
        scales.append(site["scale"])
        scaled_names.append(name)
    for name, site in enum_sites:
        factor = site_factor(name, site, site["unscaled_log_prob"], dims_of[name], mpn)
        factors.setdefault(_ordinal(site), []).append(factor)
        scales.append(site["scale"])
        scaled_names.append(name)
    scale = None
    if factors:
        _check_guide_enumeration_is_local(enum_sites, guide_trace)
        scale = _common_scale(scales, scaled_names)
    return costs, factors, enum_vars, scale


def _model_costs(model_trace: Trace, guide_trace: Trace, mpn: int) -> dict[frozenset, list[Factor]]:
    """The model's costs by ordinal: the plain log densities, and the factors that depend on
    a variable the model enumerates, contracted and scaled."""
    costs, factors, enum_vars, scale = _model_factors(model_trace, guide_trace, mpn)
    for ordinal, terms in contract_tree(factors, enum_vars).items():
        for term in terms:
            term = Factor(scale_and_mask(term.tensor, scale), term.dims)
            costs.setdefault(ordinal, []).append(term)
    return costs


def _marginals(model_trace: Trace, guide_trace: Trace, mpn: int) -> dict[str, Any]:
    """The posterior marginal of each variable the model enumerates: the gradient of the log
    partition function with respect to a zero factor added on the variable (and its plates)."""
    _, factors, enum_vars, _ = _model_factors(model_trace, guide_trace, mpn)
    tree = {ordinal: list(terms) for ordinal, terms in factors.items()}
    queries = {}
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or name in guide_trace.nodes:
            continue
        if site["infer"].get("_enumerate_dim") is None:
            continue
        own = site_factor(name, site, site["unscaled_log_prob"], model_trace._site_dims[name], mpn)
        frames = sorted((f for f in site["cond_indep_stack"] if f.vectorized), key=lambda f: f.dim)
        frames = [f for f in frames if f.name in own.dims]
        sizes = [own.tensor.shape[own.dims.index(d)] for d in [name] + [f.name for f in frames]]
        query = torch.zeros(sizes, requires_grad=True)
        queries[name] = (query, frames)
        tree.setdefault(_ordinal(site), []).append(
            Factor(query, (name,) + tuple(f.name for f in frames))
        )
    with torch.enable_grad():
        log_z = sum(f.tensor.sum() for fs in contract_tree(tree, enum_vars).values() for f in fs)
        grads = torch.autograd.grad(log_z, [q for q, _ in queries.values()])
    marginals = {}
    for (name, (_, frames)), probs in zip(queries.items(), grads, strict=True):
        # The values' dim last, the plates' dims where the plates put them.
        probs = probs.movedim(0, -1)
        shape = [1] * max([0] + [-f.dim for f in frames])
        for f, size in zip(frames, probs.shape[:-1], strict=True):
            shape[f.dim] = size
        probs = probs.reshape(shape + [probs.shape[-1]])
        while probs.dim() > 1 and probs.shape[0] == 1:
            probs = probs.squeeze(0)
        logits = probs.log()
        fn = model_trace.nodes[name]["fn"]
        if isinstance(fn, torch.distributions.Bernoulli):
            logits = logits[..., 1] - logits[..., 0]
        marginals[name] = type(fn)(logits=logits)
    return marginals


def _check_guide_enumeration_is_local(enum_sites: list, guide_trace: Trace) -> None:
    """A variable the guide enumerates must lie in every plate of the variables the model
    enumerates (model enumeration no more local than the guide's), as Pyro requires."""
    if not enum_sites:
        return
    shared = frozenset.intersection(*(_ordinal(site) for _, site in enum_sites))
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["infer"].get("_enumerate_dim") is None:
            continue
        for f in site["cond_indep_stack"]:
            if f.vectorized and f.name not in shared:
                raise ValueError(
                    f"site '{name}' is enumerated in the guide inside plate '{f.name}', but "
                    "the model enumerates variables outside that plate; enumerate those in "
                    "the guide too, or this one in the model"
                )


def compute_enum_elbo(model_trace: Trace, guide_trace: Trace, mpn: int) -> torch.Tensor:
    """The ELBO of one pair of enumerated traces, its gradients Pyro's (see module docstring)."""
    costs = _model_costs(model_trace, guide_trace, mpn)
    guide_dims_of = guide_trace._site_dims
    dice: list[tuple[frozenset, Factor]] = []  # (ordinal, log weight) per guide site
    counts: list[tuple[frozenset, int]] = []  # (ordinal, number of values) per sequential site
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample":
            continue
        ordinal = _ordinal(site)
        if site["infer"].get("enumerate") == "sequential":
            counts.append((ordinal, site["infer"]["_enum_total"]))
        dims = guide_dims_of[name]
        costs.setdefault(ordinal, []).append(site_factor(name, site, -site["log_prob"], dims, mpn))
        score = site["score_parts"][1]
        if not isinstance(score, torch.Tensor):
            continue
        if not site["infer"].get("enumerate"):
            score = score - score.detach()
        dice.append((ordinal, site_factor(name, site, score, dims, mpn)))
    elbo = 0.0
    for ordinal, terms in costs.items():
        weights = [f for o, f in dice if o <= ordinal]
        # A cost that no sequential site is upstream of is added once per value of the site.
        repeats = math.prod(n for o, n in counts if not o <= ordinal)
        if repeats != 1:
            terms = [Factor(cost.tensor / repeats, cost.dims) for cost in terms]
        for cost in terms:
            if not weights:
                elbo = elbo + cost.tensor.sum()
                continue
            summed = set().union(*(w.dims for w in weights)) - set(cost.dims)
            log_prob = sumproduct(weights, summed)
            prob, value = _broadcast(Factor(log_prob.tensor.exp(), log_prob.dims), cost)
            mask = prob > 0
            if not VALUES_READABLE[0]:  # capturing: no value to branch on, zero the cost there
                value = torch.where(mask, value, torch.zeros((), dtype=value.dtype))
            elif not bool(mask.all()):  # 0 * -inf is nan: leave out what has no weight
                prob, value = prob.masked_select(mask), value.masked_select(mask)
            elbo = elbo + (prob * value).sum()
    return elbo


def _broadcast(a: Factor, b: Factor) -> tuple[torch.Tensor, torch.Tensor]:
    (x, y), _ = align([a, b])
    shape = torch.broadcast_shapes(x.shape, y.shape)
    return x.expand(shape), y.expand(shape)


class JitTraceEnum_ELBO(_CapturedELBO, TraceEnum_ELBO):
    """``TraceEnum_ELBO`` captured once per input signature and replayed, as
    :class:`~miniprob.infer.JitTrace_ELBO` is (``make_fx``, no ``torch.jit``; the JIT options
    are accepted and not used). The enumeration is part of the graph: the first call's
    structure (its enumerated values, its sequential branches) is repeated."""
