"""Reparameterizers: each rewrites one sample site into auxiliary sample sites and a
deterministic function of them, to give inference a friendlier geometry.

The one mechanism is the ``poutine.reparam`` handler: for each sample site its ``config``
names a :class:`Reparam`, whose ``apply`` draws the auxiliary sites (with ordinary
``sample`` statements, so every handler sees them) and returns the original site as an observed,
masked ``Delta`` of the transformed value. As in Pyro, ``LocScaleReparam`` decenters a
location-scale family (``name_decentered``, with a learned ``name_centered`` parameter unless
``centered`` is given), ``TransformReparam`` draws a transformed distribution's base
(``name_base``) and ``NeuTraReparam`` draws all latents at once through a trained flat
autoguide's transform; under one seed the sites and numbers are Pyro's.

Example::

    >>> import miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob import poutine
    >>> from miniprob.infer.reparam import LocScaleReparam
    >>> def model():
    ...     return pyro.sample("x", dist.Normal(1.0, 2.0))
    >>> reparam_model = poutine.reparam(model, config={"x": LocScaleReparam(centered=0.0)})
    >>> list(poutine.trace(reparam_model).get_trace().stochastic_nodes)
    ['x_decentered']
"""

from .loc_scale import LocScaleReparam
from .neutra import NeuTraReparam
from .reparam import Reparam
from .transform import TransformReparam

__all__ = ["LocScaleReparam", "NeuTraReparam", "Reparam", "TransformReparam"]
