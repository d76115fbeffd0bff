"""Autoguides (``miniprob.infer.autoguide``): guides built from a model, as Pyro's.

An autoguide runs its model once, on its first call, to find the latent sample sites, their
supports, shapes and plates (the *prototype trace*), then builds a variational distribution
over them. Every latent is handled in the unconstrained space: ``biject_to(site.support)``
maps the real numbers onto the support, and each site is drawn as a ``Delta`` at the
transformed value carrying the log-det-Jacobian, so the guide's density is the constrained
one. :class:`AutoDelta` and :class:`AutoNormal` keep parameters per site (per element in
plates, indexed by the subsample in subsampled plates); the flat guides
(:class:`AutoDiagonalNormal`, :class:`AutoMultivariateNormal`,
:class:`AutoLowRankMultivariateNormal`, :class:`AutoLaplaceApproximation`) pack all latents into
one vector with :func:`miniprob.flat.ravel`. :class:`AutoGuideList` joins parts, each built
on ``poutine.block(model, ...)``. Where parameters start is an initialization strategy
(:mod:`.initialization`). Parameter names, initial values and random draws are Pyro's, so
under one seed a fit follows Pyro's. On purpose unlike Pyro: discrete sites marked for
enumeration are left out of the guide (Pyro fails on them), ``init_to_value`` refuses values
outside a site's support and names that are not latent sites, and ``quantiles`` refuses
levels outside (0, 1).

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import SVI, Trace_ELBO
    >>> from miniprob.optim import Adam
    >>> def model(data):
    ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(data)):
    ...         pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)
    >>> pyro.clear_param_store()
    >>> guide = AutoNormal(model)
    >>> svi = SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO())
    >>> losses = [svi.step(torch.full((20,), 3.0)) for _ in range(300)]
    >>> round(guide.median()["loc"].item())
    3
"""

# The names are listed once, in the modules that define them: ``guides`` (Pyro's path for the
# guide classes) and ``initialization`` (the strategies and ``InitMessenger``).
from .guides import *  # noqa: F403
from .guides import __all__ as _guides
from .initialization import *  # noqa: F403
from .initialization import __all__ as _initialization

__all__ = [*_guides, *_initialization]
