"""Discrete latent variables summed out exactly: ``TraceEnum_ELBO``, ``config_enumerate``,
``infer_discrete``.

The idea (Pyro's, after Obermeyer et al., "Tensor Variable Elimination for Plated Factor
Graphs", ICML 2019): run the model once with every enumerated site holding its whole support
along a dim of its own (:class:`~miniprob.poutine.enum`), so that each log density is a tensor
over the joint values of the variables it depends on; then sum the variables out of the
product of those tensors, plate by plate (:mod:`.contract`). The ELBO does it in log space
(log-sum-exp); ``infer_discrete`` walks the same elimination backwards to draw, or maximize,
the enumerated values.

Example::

    >>> from miniprob.infer.enum import TraceEnum_ELBO, config_enumerate, infer_discrete
"""

from .config import config_enumerate
from .discrete import infer_discrete
from .traceenum_elbo import JitTraceEnum_ELBO, TraceEnum_ELBO

__all__ = ["JitTraceEnum_ELBO", "TraceEnum_ELBO", "config_enumerate", "infer_discrete"]
