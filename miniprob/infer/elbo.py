"""``ELBO``: the base of the evidence lower bound estimators.

An ELBO runs the guide under ``trace``, replays the model against the guide's samples, and
turns the two traces into a loss. Subclasses define how (``_differentiable_loss_particle``).

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import Trace_ELBO
    >>> def model():
    ...     pyro.sample("x", dist.Normal(0.0, 1.0))
    >>> def guide():
    ...     pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))
    >>> Trace_ELBO().loss(model, guide)
    0.0
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from itertools import zip_longest
from typing import Any

import torch

from ..distributions.unit import Unit
from ..params import get_param_store
from ..poutine.handlers import block, replay, trace
from ..poutine.plate import _Subsample, plate, prune_subsample_sites
from ..poutine.trace_struct import Trace
from ..runtime import Message, Messenger
from ..validation import is_validation_enabled
from .diagnostics import raise_nonfinite

VALUES_READABLE = [True]
"""False while :func:`miniprob.infer.compiled.capture` records a step: its tensors have no
values, so the checks that read one (a particle's finiteness) are left to the compiled step."""

#: The name of the plate that draws vectorized particles (``vectorize_particles=True``).
PARTICLE_PLATE = "num_particles_vectorized"


class ELBO:
    """Base class of ELBO estimators.

    :param num_particles: samples averaged per loss evaluation.
    :param max_plate_nesting: bound on the number of nested plates (guessed when needed).
    :param vectorize_particles: draw all particles at once, as an extra outermost plate.
    :param retain_graph: passed to ``backward``.
    """

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: float = float("inf"),
        vectorize_particles: bool = False,
        strict_enumeration_warning: bool = True,
        ignore_jit_warnings: bool = False,
        jit_options: dict | None = None,
        retain_graph: bool | None = None,
        tail_adaptive_beta: float = -1.0,
    ) -> None:
        if not (isinstance(num_particles, int) and num_particles >= 1):
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting
        self.vectorize_particles = vectorize_particles
        if vectorize_particles and num_particles > 1:
            # The particle plate sits left of the model's own plates (as in Pyro).
            self.max_plate_nesting += 1
        self.retain_graph = retain_graph
        self.strict_enumeration_warning = strict_enumeration_warning
        self.ignore_jit_warnings = ignore_jit_warnings
        self.jit_options = jit_options
        self._checked_shapes: set = set()  # site signatures whose shapes passed the checks
        self._checked_pairs: set = set()

    # ---- traces --------------------------------------------------------------------------
    def _get_trace(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> tuple[Trace, Trace]:
        """One guide trace and the model trace replayed against it, log densities computed."""
        guide_trace = trace(guide).get_trace(*args, **kwargs)
        model_trace = trace(replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        if is_validation_enabled():
            check_model_guide_match(
                model_trace, guide_trace, self.max_plate_nesting, self._checked_pairs
            )
        guide_trace = prune_subsample_sites(guide_trace)
        model_trace = prune_subsample_sites(model_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        if is_validation_enabled():
            for tr in (model_trace, guide_trace):
                for site in tr.nodes.values():
                    if site["type"] == "sample":
                        self._check_site_shape(site)
        return model_trace, guide_trace

    def _get_traces(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> Iterator[tuple[Trace, Trace]]:
        if self.vectorize_particles:
            if self.max_plate_nesting == float("inf"):
                self._guess_max_plate_nesting(model, guide, args, kwargs)
            if self.num_particles > 1:
                model, guide = self._particle_plate(model), self._particle_plate(guide)
            yield self._get_trace(model, guide, args, kwargs)
        else:
            for _ in range(self.num_particles):
                yield self._get_trace(model, guide, args, kwargs)

    def _particle_plate(self, fn: Callable) -> Callable:
        return plate(PARTICLE_PLATE, self.num_particles, dim=-self.max_plate_nesting)(fn)

    def _guess_max_plate_nesting(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> None:
        """Run model and guide once (as Pyro does) to find how deeply plates nest."""
        with block():
            guide_trace = trace(guide).get_trace(*args, **kwargs)
            model_trace = trace(replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        model_trace = prune_subsample_sites(model_trace)
        guide_trace = prune_subsample_sites(guide_trace)
        sites = [
            site
            for tr in (model_trace, guide_trace)
            for site in tr.nodes.values()
            if site["type"] == "sample"
        ]
        if is_validation_enabled():
            # Checked now, as in Pyro: once max_plate_nesting is finite, dims left of it may
            # broadcast freely, and a stray batch dim there would go unnoticed.
            model_trace.compute_log_prob()
            guide_trace.compute_log_prob()
            for site in sites:
                check_site_shape(site, math.inf)
        dims = [f.dim for site in sites for f in site["cond_indep_stack"] if f.vectorized]
        self.max_plate_nesting = -min(dims) if dims else 0
        if self.vectorize_particles and self.num_particles > 1:
            self.max_plate_nesting += 1

    def _check_site_shape(self, site: dict) -> None:
        """Each log_prob dim must be a plate's dim or 1 (checked once per site and shape)."""
        log_prob = site["log_prob"]
        key = (site["name"], log_prob.shape, site["cond_indep_stack"])
        if key in self._checked_shapes:
            return
        check_site_shape(site, self.max_plate_nesting)
        self._checked_shapes.add(key)

    # ---- the public interface --------------------------------------------------------------
    def _differentiable_loss_particle(
        self, model_trace: Trace, guide_trace: Trace
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def differentiable_loss(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """The loss (negative ELBO) as a tensor whose gradients are unbiased ELBO gradients."""
        loss = 0.0
        surrogate = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss_particle, surrogate_particle = self._differentiable_loss_particle(
                model_trace, guide_trace
            )
            if VALUES_READABLE[0] and not torch.isfinite(loss_particle):
                raise_nonfinite(float(loss_particle), model_trace, guide_trace)
            loss = loss + loss_particle / self.num_particles
            surrogate = surrogate + surrogate_particle / self.num_particles
        # The value of the loss, the gradients of the surrogate (they differ where the guide
        # has score-function terms), as in Pyro.
        if isinstance(surrogate, torch.Tensor):
            return loss + (surrogate - surrogate.detach())
        return loss

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss (negative ELBO) as a float, without gradients."""
        with torch.no_grad():
            total = 0.0
            particles = []
            for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
                particles.append((model_trace, guide_trace))
                loss, _ = self._differentiable_loss_particle(model_trace, guide_trace)
                total = total + loss / self.num_particles
            value = float(total)
        if not math.isfinite(value):
            raise_nonfinite(value, particles=particles)
        return value

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss as a float; gradients accumulate on the parameters' unconstrained leaves."""
        # The traces are gone by the time the backward pass runs (the helper's frame held
        # them): their sites, distributions and tensors no longer crowd its working set.
        value, surrogate = self._loss_and_surrogate(model, guide, args, kwargs)
        if isinstance(surrogate, torch.Tensor) and surrogate.requires_grad:
            surrogate.backward(retain_graph=self.retain_graph)
        return value

    def _loss_and_surrogate(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> tuple[float, Any]:
        particles = []  # kept for the report, should the loss be non-finite
        losses, surrogates = [], []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            particles.append((model_trace, guide_trace))
            loss_particle, surrogate_particle = self._differentiable_loss_particle(
                model_trace, guide_trace
            )
            losses.append(loss_particle)
            surrogates.append(surrogate_particle)
        loss = _particle_mean(losses, self.num_particles)
        surrogate = _particle_mean(surrogates, self.num_particles)
        value = float(loss)
        if not math.isfinite(value):
            raise_nonfinite(value, particles=particles)
        return value, surrogate

    def __call__(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> ELBOModule | torch.Tensor:
        """``elbo(model, guide)`` is an :class:`ELBOModule`, an ``nn.Module`` whose forward is
        the differentiable loss, as in Pyro.

        With further arguments, ``elbo(model, guide, *args, **kwargs)`` is
        ``differentiable_loss(model, guide, *args, **kwargs)`` (a miniprob extension: ELBOs
        are loss callables for ``SVI``). A model without arguments gets its loss from
        ``elbo(model, guide)()`` or ``differentiable_loss``.
        """
        if not args and not kwargs:
            return ELBOModule(model, guide, self)
        return self.differentiable_loss(model, guide, *args, **kwargs)


class _NewParams(Messenger):
    """Record the names of the parameters read inside that ``known`` lacks, in reading order."""

    def __init__(self, known: dict) -> None:
        super().__init__()
        self.known = known
        self.names: dict[str, None] = {}

    def postprocess_message(self, msg: Message) -> None:
        if msg["type"] == "param" and msg["name"] not in self.known:
            self.names[msg["name"]] = None


class ELBOModule(torch.nn.Module):
    """An ELBO bound to a model and a guide, as an ``nn.Module``: ``forward(*args, **kwargs)``
    is ``elbo.differentiable_loss(model, guide, *args, **kwargs)``.

    Its parameters are the model's and guide's: those of ``model`` and ``guide`` when they are
    ``nn.Module`` s, and every ParamStore parameter they read (``pyro.param``,
    ``pyro.module``), adopted on the call that first reads it, as Pyro's modules create theirs
    on a first call. Adopted parameters are the store's unconstrained leaves themselves (made
    ``nn.Parameter`` s in place), under ``params``, their store names with ``.`` written ``_``:
    ``torch.optim``, ``DistributedDataParallel`` and Lightning train the store directly. Call
    the module once before handing ``parameters()`` to an optimizer or wrapping it in
    ``DistributedDataParallel``.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob.infer import Trace_ELBO
        >>> pyro.clear_param_store()
        >>> def model(x):
        ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)
        >>> def guide(x):
        ...     m = pyro.param("m", torch.tensor(0.0))
        ...     pyro.sample("loc", dist.Delta(m))
        >>> loss_fn = Trace_ELBO()(model, guide)
        >>> x = torch.full((10,), 3.0)
        >>> _ = loss_fn(x)
        >>> [name for name, _ in loss_fn.named_parameters()]
        ['params.m']
        >>> opt = torch.optim.Adam(loss_fn.parameters(), lr=0.1)
        >>> for _ in range(200):
        ...     opt.zero_grad()
        ...     loss_fn(x).backward()
        ...     opt.step()
        >>> round(pyro.param("m").item(), 1)
        3.0
    """

    def __init__(self, model: Callable, guide: Callable, elbo: ELBO) -> None:
        super().__init__()
        self.model = model
        self.guide = guide
        self.elbo = elbo
        self.params = torch.nn.Module()
        self._adopted: dict[str, str] = {}  # store name -> attribute name in ``params``

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        reads = _NewParams(self._adopted)
        with reads:
            loss = self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)
        if reads.names:
            self._adopt(reads.names)
        return loss

    def _adopt(self, names: Iterable[str]) -> None:
        store = get_param_store()
        owned = {id(p) for p in self.parameters()}
        attrs = set(self.params._parameters)
        for name in names:
            if name not in store:  # a value some handler gave, not a stored parameter
                continue
            leaf = store.unconstrained(name)
            attr = name.replace(".", "_")
            if attr in attrs:
                other = next(n for n, a in self._adopted.items() if a == attr)
                raise ValueError(
                    f"ELBOModule: params '{name}' and '{other}' both become the module "
                    f"parameter '{attr}' ('.' is written '_'); rename one of them"
                )
            self._adopted[name] = attr
            if id(leaf) in owned:  # already a parameter of the model's or guide's module
                continue
            if not isinstance(leaf, torch.nn.Parameter):
                # In place (as torch's UninitializedParameter does): the store, the optimizer
                # and the graph of this call keep the same tensor.
                leaf.__class__ = torch.nn.Parameter
            self.params.register_parameter(attr, leaf)
            attrs.add(attr)
            owned.add(id(leaf))


def _particle_mean(values: list, num_particles: int) -> Any:
    """``sum(v / num_particles for v in values)``, added left to right; a single particle is
    returned as it is (dividing by one and adding to zero would only add autograd nodes)."""
    if num_particles == 1 and len(values) == 1:
        return values[0]
    total = values[0] / num_particles
    for value in values[1:]:
        total = total + value / num_particles
    return total


def check_infer_options(guide_trace: Trace, elbo_name: str) -> None:
    """What an ELBO that draws every guide site does with ``infer`` options it does not act on,
    as Pyro's ``Trace_ELBO``: it warns about sites marked for enumeration, and (where Pyro
    would ignore it silently) refuses ``infer={"baseline": ...}``.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> guide = lambda: pyro.sample("z", dist.Bernoulli(0.5), infer={"baseline": {}})
        >>> check_infer_options(poutine.trace(guide).get_trace(), "Trace_ELBO")
        Traceback (most recent call last):
        ...
        ValueError: guide site 'z': Trace_ELBO has no baselines (infer={'baseline': ...}); ...
    """
    enumerated = []
    for name, site in guide_trace.nodes.items():
        infer = site.get("infer")
        if not infer or site["type"] != "sample":
            continue
        if "baseline" in infer:
            raise ValueError(
                f"guide site '{name}': {elbo_name} has no baselines (infer={{'baseline': ...}}); "
                "use TraceGraph_ELBO to reduce the variance of score-function gradients with "
                "them, or remove the option"
            )
        if infer.get("enumerate"):
            enumerated.append(name)
    if enumerated:
        warnings.warn(
            f"Found sample sites configured for enumeration: {', '.join(enumerated)}\n"
            "If you want to enumerate sites, you need to use TraceEnum_ELBO instead.",
            stacklevel=5,
        )


def check_model_guide_match(
    model_trace: Trace,
    guide_trace: Trace,
    max_plate_nesting: float = math.inf,
    checked: set | None = None,
) -> None:
    """Check that a guide fits its model, as Pyro does (with validation on).

    - A latent guide site that the model lacks altogether is an error (Pyro only warns; a
      misspelt site name would go unnoticed), unless marked ``infer={'is_auxiliary': True}``.
    - Warnings, as in Pyro: any other non-auxiliary guide site that is not a model latent (an
      observed site such as a ``deterministic``), an auxiliary site that is a model latent, a
      model latent the guide lacks (it is drawn from the prior).
    - A latent in both must have the same event dims, and the same shape right of
      ``max_plate_nesting`` (dims of size 1 broadcast). Differing shapes that passed are added
      to ``checked`` and not checked again.
    """
    # A plate's subsample indices are a sample site; a plate may subsample on one side only.
    model_latents = {
        name: site
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
        if not isinstance(site["fn"], _Subsample)
    }
    guide_vars = set()
    unknown, not_model_latents, auxiliary_in_model = [], [], []
    guide_only_plates: set[str] = set()
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample":
            continue
        model_site = model_latents.get(name)
        if model_site is not None:
            guide_vars.add(name)
            model_fn, guide_fn = model_site["fn"], site["fn"]
            # Equal shapes agree; torch.Size attributes read directly (every latent, every step).
            if (
                model_fn._batch_shape != guide_fn._batch_shape
                or model_fn._event_shape != guide_fn._event_shape
            ):
                key = (name, model_fn._batch_shape, model_fn._event_shape)
                key += (guide_fn._batch_shape, guide_fn._event_shape, max_plate_nesting)
                if checked is None or key not in checked:
                    _check_same_shape(name, model_fn, guide_fn, max_plate_nesting)
                    if checked is not None:
                        checked.add(key)
            if site["infer"].get("is_auxiliary"):
                auxiliary_in_model.append(name)
        elif not isinstance(site["fn"], _Subsample):
            guide_vars.add(name)
            if site["infer"].get("is_auxiliary"):
                if isinstance(site["fn"], Unit) and not site["fn"].has_rsample_specified:
                    raise ValueError(
                        f'At guide site pyro.factor("{name}",...), missing specification of '
                        "has_rsample. Please either set has_rsample=True if the factor statement "
                        "arises from reparametrized sampling or has_rsample=False otherwise."
                    )
                continue
            if site["is_observed"] or name in model_trace.nodes:
                not_model_latents.append(name)
            else:
                unknown.append(name)
        elif name not in model_trace.nodes:
            guide_only_plates.add(name)
    if unknown:
        raise ValueError(
            f"guide sample site(s) {sorted(unknown)} do not appear in the model (check the site "
            "names, or mark them infer={'is_auxiliary': True})"
        )
    if guide_only_plates:
        warnings.warn(
            f"Found plate statements in guide but not model: {guide_only_plates}", stacklevel=4
        )
    if auxiliary_in_model:
        warnings.warn(
            f"Found auxiliary vars in the model: {sorted(auxiliary_in_model)}", stacklevel=4
        )
    if not_model_latents:
        warnings.warn(
            "Found non-auxiliary vars in guide but not model, consider marking these "
            f"infer={{'is_auxiliary': True}}: {sorted(not_model_latents)}",
            stacklevel=4,
        )
    # A latent the model enumerates is summed out, not drawn from the prior.
    missing = {
        name
        for name in model_latents.keys() - guide_vars
        if model_latents[name]["infer"].get("_enumerate_dim") is None
    }
    if missing:
        _check_autoguide_covers(missing, model_latents, guide_trace)
        warnings.warn(
            f"Found vars in model but not guide: {sorted(missing)} "
            "(they are sampled from the prior)",
            stacklevel=4,
        )


def _check_autoguide_covers(missing: set, model_latents: dict, guide_trace: Trace) -> None:
    """An autoguide covers the latent sites its model had at its first call: a model latent
    it lacks (not left to enumeration) means the model's sites changed since, an error."""
    uncovered = sorted(n for n in missing if not model_latents[n]["infer"].get("enumerate"))
    guides = {
        site["infer"]["autoguide"]
        for site in guide_trace.nodes.values()
        if site["type"] == "sample" and "autoguide" in site["infer"]
    }
    if uncovered and guides:
        raise ValueError(
            f"model latent site(s) {uncovered} are not covered by the autoguide "
            f"{sorted(guides)}, which found the model's latent sites at its first call: the "
            "model's latent sites changed since (build a new autoguide), or they were hidden "
            "from it (give them a guide of their own in an AutoGuideList)"
        )


def _check_same_shape(name: str, model_fn: Any, guide_fn: Any, max_plate_nesting: float) -> None:
    """Pyro's rule for shapes that differ: the same event dims; the same sizes right of
    ``max_plate_nesting`` plates, where a missing dim is a 1."""
    event_dim = len(model_fn.event_shape)
    if len(guide_fn.event_shape) != event_dim:
        raise ValueError(
            f"Model and guide event_dims disagree at site '{name}': {event_dim} vs "
            f"{len(guide_fn.event_shape)} (model event shape {tuple(model_fn.event_shape)}, "
            f"guide event shape {tuple(guide_fn.event_shape)}; check the .to_event(...) calls)"
        )
    model_shape = model_fn.batch_shape + model_fn.event_shape
    guide_shape = guide_fn.batch_shape + guide_fn.event_shape
    if model_shape != guide_shape:
        # Dims left of the plates (and of the event) may broadcast freely, as in Pyro.
        kept = max_plate_nesting + event_dim
        if len(model_shape) > kept:
            model_shape = model_shape[len(model_shape) - int(kept) :]
        if len(guide_shape) > kept:
            guide_shape = guide_shape[len(guide_shape) - int(kept) :]
        sizes = zip_longest(reversed(model_shape), reversed(guide_shape), fillvalue=1)
        if any(m != g for m, g in sizes):
            raise ValueError(
                f"Model and guide shapes disagree at site '{name}': {model_shape} vs "
                f"{guide_shape} (the guide must draw the value in the model's shape: enclose "
                "it in the same plates, or expand its distribution)"
            )


def check_site_shape(site: dict, max_plate_nesting: float) -> None:
    """Raise if a site's log_prob has a batch dim that no plate declares (Pyro's rule)."""
    actual = list(site["log_prob"].shape)
    expected: list[int | None] = []
    inner = 0  # how many dims the site's own plates span, the particle plate left out
    particles = False
    for f in site["cond_indep_stack"]:
        if f.dim is not None:
            if f.name == PARTICLE_PLATE:
                particles = True
            else:
                inner = max(inner, -f.dim)
            if len(expected) < -f.dim:
                expected = [None] * (-f.dim - len(expected)) + expected
            if expected[f.dim] is not None:
                other = [g.name for g in site["cond_indep_stack"] if g.dim == f.dim and g is not f]
                raise ValueError(
                    f"at site '{site['name']}', plates '{f.name}' and {other} both use dim {f.dim}"
                )
            expected[f.dim] = f.size
    if particles:
        # The particle plate sits at -max_plate_nesting, left of every other plate: the dims
        # between it and the site's own plates are declared by no plate, size 1 as they are
        # without it (not gaps between the site's plates, which Pyro leaves free).
        for i in range(len(expected) - inner):
            if expected[i] is None:
                expected[i] = 1
    expected_sizes = [-1 if e is None else e for e in expected]
    if len(expected_sizes) > max_plate_nesting:
        raise ValueError(
            f"at site '{site['name']}', plates nest {len(expected_sizes)} deep but "
            f"max_plate_nesting={max_plate_nesting}; raise max_plate_nesting"
        )
    if max_plate_nesting < len(actual):
        actual = actual[len(actual) - int(max_plate_nesting) :]
    pairs = zip_longest(reversed(actual), reversed(expected_sizes), fillvalue=1)
    for i, (a, e) in enumerate(pairs):
        if e != -1 and e != a:
            plates = [f.name for f in site["cond_indep_stack"] if f.vectorized]
            owner = [f.name for f in site["cond_indep_stack"] if f.dim == -1 - i]
            where = (
                f"plate '{owner[0]}' has size {e} there"
                if owner
                else "no plate declares that dim, so it must have size 1"
            )
            raise ValueError(
                f"at site '{site['name']}', invalid log_prob shape: expected {expected_sizes} from "
                f"the enclosing plates {plates}, got {actual} (at dim {-1 - i}, log_prob has size "
                f"{a} but {where}). Try one of: enclose the batched tensor in a "
                "`with pyro.plate(...)`; `.to_event(...)` the distribution; "
                "`.permute()` the data dims"
            )
