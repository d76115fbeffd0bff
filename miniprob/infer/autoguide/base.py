"""``AutoGuide``: the base of the autoguides (prototype trace, plates, named parameters).

An autoguide runs its model once, on its first call, under ``block`` (so that no outer handler
sees it) and records a *prototype trace* of the model's latent sample sites: their
distributions, supports, shapes and plates. Each subclass builds its parameters from that trace
and, at every later call, draws every latent site under the plates the prototype found.

An autoguide is a :class:`~miniprob.nn.PyroModule` named after its class, as in Pyro: its
parameters are ``PyroParam`` (and plain ``nn.Parameter``) attributes, so they live in the param
store under Pyro's names (``AutoNormal.locs.z``, ``AutoDiagonalNormal.loc``,
``AutoGuideList.0.scale``) and, as the very same leaf tensors, in the module
(``guide.parameters()``, ``state_dict`` with Pyro's keys, ``requires_grad_``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.distributions import biject_to
from torch.distributions.transforms import Transform, identity_transform

from ...distributions import constraints
from ...distributions.delta import Delta
from ...distributions.util import sum_rightmost
from ...nn import PyroModule, PyroParam
from ...poutine.handlers import block, trace
from ...poutine.plate import _Subsample, plate
from ...poutine.trace_struct import Trace
from ...primitives import sample
from ...runtime import Message
from ...unconstrain import simplified
from .initialization import init_values, support_errors

__all__ = ["AutoGuide"]


def _prototype_hide(msg: Message) -> bool:
    """The prototype trace keeps latent sample sites only (not params, observations, plate
    indices, nor the discrete sites left to enumeration)."""
    if msg["type"] != "sample" or msg["is_observed"] or isinstance(msg["fn"], _Subsample):
        return True
    return bool(msg["infer"].get("enumerate")) and msg["fn"].support.is_discrete


class LatentSite(NamedTuple):
    """What an autoguide keeps of one latent site of the prototype trace."""

    name: str
    transform: Transform  # biject_to(support), identity steps left out
    inv: Transform  # its inverse, kept (torch makes a new one at each .inv otherwise)
    event_dim: int  # of the unconstrained value
    site_event_dim: int  # of the site's value
    plates: tuple[str, ...]  # its plates, outermost first


def latent_site(name: str, site: Message, unconstrained: torch.Tensor) -> LatentSite:
    """The :class:`LatentSite` of a prototype site whose unconstrained value is known.

    Example::

        >>> import miniprob.distributions as dist
        >>> site = {"name": "p", "fn": dist.Dirichlet(torch.ones(3)), "value": torch.ones(3) / 3,
        ...         "cond_indep_stack": ()}
        >>> entry = latent_site("p", site, bijection(site).inv(site["value"]))
        >>> entry.event_dim, entry.site_event_dim
        (1, 1)
    """
    transform = bijection(site)
    event_dim = site["fn"].event_dim + unconstrained.dim() - site["value"].dim()
    plates = tuple(f.name for f in site["cond_indep_stack"])
    return LatentSite(name, transform, transform.inv, event_dim, site["fn"].event_dim, plates)


def bijection(site: Message) -> Transform:
    """``biject_to`` of the site's support (identity steps left out), or an error naming it.

    Example::

        >>> import miniprob.distributions as dist
        >>> bijection({"name": "s", "fn": dist.LogNormal(0.0, 1.0)})
        ExpTransform()
    """
    with support_errors(site):
        return simplified(biject_to(site["fn"].support))


def constrained_site(guide: str, site: LatentSite, unconstrained: torch.Tensor) -> torch.Tensor:
    """Sample ``site`` at ``transform(unconstrained)``: a ``Delta`` whose log density is the
    log-det-Jacobian of the inverse transform (so the guide's density is that of the
    constrained value), as Pyro's. ``infer["autoguide"]`` names the guide (for the ELBO's
    checks).

    Example::

        >>> import miniprob.distributions as dist
        >>> site = {"name": "s", "fn": dist.LogNormal(0.0, 1.0), "value": torch.tensor(1.0),
        ...         "cond_indep_stack": ()}
        >>> entry = latent_site("s", site, torch.tensor(0.0))
        >>> constrained_site("MyGuide", entry, torch.tensor(0.0)).item()
        1.0
    """
    infer = {"autoguide": guide}
    transform = site.transform
    if transform is identity_transform:
        return sample(site.name, Delta(unconstrained, event_dim=site.site_event_dim), infer=infer)
    value = transform(unconstrained)
    log_density = site.inv.log_abs_det_jacobian(value, unconstrained)
    log_density = sum_rightmost(log_density, log_density.dim() - value.dim() + site.site_event_dim)
    delta = Delta(value, log_density=log_density, event_dim=site.site_event_dim)
    return sample(site.name, delta, infer=infer)


def periodic_repeat(tensor: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """``tensor`` repeated periodically along ``dim`` up to length ``size`` (how an
    autoguide grows an initial value drawn for a subsample to the plate's full size).

    Example::

        >>> periodic_repeat(torch.tensor([1.0, 2.0, 3.0]), 5, -1).tolist()
        [1.0, 2.0, 3.0, 1.0, 2.0]
    """
    if dim >= 0:
        dim -= tensor.dim()
    period = tensor.size(dim)
    repeats = [1] * tensor.dim()
    repeats[dim] = (size + period - 1) // period
    result = tensor.repeat(*repeats)
    return result[(Ellipsis, slice(None, size)) + (slice(None),) * (-1 - dim)]


class AutoGuide(PyroModule):
    """Base class of the autoguides: a guide built from ``model``.

    Calling the guide (with the model's arguments) draws every latent site of the model and
    returns ``{site: value}``; the first call runs the model once to find those sites.

    :param model: the model.
    :param create_plates: an optional function of the model's arguments returning a ``plate``
        (or several) for the guide to use, e.g. to subsample; plates it does not return are
        made from the prototype's.
    """

    def __init__(
        self,
        model: Callable,
        *,
        create_plates: Callable[..., plate | Iterable[plate]] | None = None,
    ) -> None:
        super().__init__(name=type(self).__name__)
        self._model = (model,)  # a tuple: the model is not a submodule
        self.create_plates = create_plates
        self.prototype_trace: Trace | None = None
        self._prototype_frames: dict[str, Any] = {}
        self._master: weakref.ref | None = None
        self._param_paths: dict[str, tuple[PyroModule, str]] = {}
        self.plates: dict[str, plate] = {}

    @property
    def model(self) -> Callable:
        """The model the guide was built from."""
        return self._model[0]

    # ---- parameters --------------------------------------------------------------------
    def _add_param(
        self,
        path: str,
        init: torch.Tensor,
        constraint: constraints.Constraint = constraints.real,
        event_dim: int | None = None,
        plain: bool = False,
    ) -> None:
        """Set attribute ``path`` (dotted: ``PyroModule`` s are made on the way, as Pyro's
        ``deep_setattr``) to a ``PyroParam`` holding ``init``, or, when ``plain``, to an
        unconstrained ``nn.Parameter``."""
        owner: PyroModule = self
        *parents, name = path.split(".")
        for part in parents:
            child = getattr(owner, part, None)
            if child is None:
                setattr(owner, part, PyroModule())
                child = getattr(owner, part)
            owner = child
        setattr(
            owner, name, nn.Parameter(init) if plain else PyroParam(init, constraint, event_dim)
        )
        self._param_paths[path] = owner, name

    def _read(self, path: str) -> torch.Tensor:
        """Parameter ``path`` (a ``param`` statement when read inside a call of the guide)."""
        owner, name = self._param_paths[path]
        return getattr(owner, name)

    def _get(self, path: str) -> torch.Tensor:
        """Parameter ``path`` when the guide has it, else its fixed buffer of that name."""
        if path in self._param_paths:
            return self._read(path)
        return getattr(self, path)

    # ---- the prototype -----------------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        model = block(self.model, hide_fn=_prototype_hide)
        with block():
            self.prototype_trace = trace(model).get_trace(*args, **kwargs)
        master = self._master() if self._master is not None else None
        if master is not None:
            master._check_prototype(self.prototype_trace)
        self._prototype_frames = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            for frame in site["cond_indep_stack"]:
                if not frame.vectorized:
                    raise ValueError(
                        f"{type(self).__name__}: site '{name}' is inside the sequential plate "
                        f"'{frame.name}'; autoguides support vectorized plates only "
                        f"(write `with plate('{frame.name}', ...)`)"
                    )
                self._prototype_frames[frame.name] = frame
        try:
            self._check_init_values(getattr(self, "init_loc_fn", None))
        except ValueError:
            self.prototype_trace = None  # the guide is as before its first call
            raise

    def _latent_sites(self) -> Iterable[tuple[str, Message]]:
        return self.prototype_trace.iter_stochastic_nodes()

    def _create_plates(self, *args: Any, **kwargs: Any) -> dict[str, plate]:
        """The plates the guide's sites are drawn in: those of ``create_plates``, the
        prototype's for the others (subsampled as in the prototype); a guide inside an
        :class:`AutoGuideList` uses the list's."""
        master = self._master() if self._master is not None else None
        if master is not None:
            self.plates = master.plates
            return self.plates
        plates: dict[str, plate] = {}
        if self.create_plates is not None:
            made = self.create_plates(*args, **kwargs)
            made = [made] if isinstance(made, plate) else list(made)
            for p in made:
                if not isinstance(p, plate):
                    raise TypeError(
                        f"{type(self).__name__}: create_plates returned {type(p).__name__}, "
                        "expected plates"
                    )
                plates[p.name] = p
        for name, frame in sorted(self._prototype_frames.items()):
            if name not in plates:
                full_size = frame.full_size or frame.size
                plates[name] = plate(name, full_size, dim=frame.dim, subsample_size=frame.size)
        self.plates = plates
        return plates

    def _in_plates(self, names: tuple[str, ...], fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` inside the plates named (from :meth:`_create_plates`)."""
        if not names:
            return fn(*args)
        if len(names) == 1:
            with self.plates[names[0]]:
                return fn(*args)
        with ExitStack() as stack:
            for name in names:
                stack.enter_context(self.plates[name])
            return fn(*args)

    # ---- the interface -----------------------------------------------------------------
    def call(self, *args: Any, **kwargs: Any) -> tuple:
        """The guide's values as a tuple, ordered by site name (Pyro's form for JIT tracing)."""
        result = self(*args, **kwargs)
        return tuple(v for _, v in sorted(result.items()))

    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The posterior median of each latent site, ``{site: tensor}``."""
        raise NotImplementedError(f"{type(self).__name__} has no median")

    def quantiles(
        self, quantiles: Iterable[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Posterior quantiles of each latent site, ``{site: tensor}``, stacked on a leading
        dim in the order of ``quantiles``."""
        raise NotImplementedError(f"{type(self).__name__} has no quantiles")

    def _check_quantiles(self, quantiles: Iterable[float] | torch.Tensor) -> list[float]:
        qs = torch.as_tensor(quantiles, dtype=torch.float64).reshape(-1).tolist()
        bad = [q for q in qs if not 0.0 < q < 1.0]
        if bad:
            raise ValueError(
                f"{type(self).__name__}.quantiles: quantiles must lie in (0, 1), got {bad}"
            )
        return qs

    def _check_init_values(self, init_loc_fn: Any) -> None:
        values = init_values(init_loc_fn)
        if values:
            unknown = sorted(set(values) - {name for name, _ in self._latent_sites()})
            if unknown:
                raise ValueError(
                    f"{type(self).__name__}: init_to_value names {unknown}, which are not latent "
                    f"sites of the model (its latent sites: "
                    f"{[name for name, _ in self._latent_sites()]})"
                )
