"""Inference (``miniprob.infer``): ELBO estimators, ``SVI`` and ``Predictive``.

Example::

    >>> from miniprob.infer import SVI, Trace_ELBO, TraceMeanField_ELBO, Predictive
"""

from ..validation import enable_validation, is_validation_enabled
from . import autoguide, reparam, util  # noqa: F401 (util: Pyro's path ``pyro.infer.util``)
from .diagnostics import set_nonfinite_mode
from .elbo import ELBO
from .enum import JitTraceEnum_ELBO, TraceEnum_ELBO, config_enumerate, infer_discrete
from .jit_elbo import JitTrace_ELBO, JitTraceMeanField_ELBO
from .predictive import Predictive
from .svi import SVI
from .trace_elbo import Trace_ELBO
from .trace_mean_field_elbo import TraceMeanField_ELBO
from .tracegraph_elbo import JitTraceGraph_ELBO, TraceGraph_ELBO

__all__ = [
    "ELBO",
    "JitTraceEnum_ELBO",
    "JitTraceGraph_ELBO",
    "JitTrace_ELBO",
    "JitTraceMeanField_ELBO",
    "Predictive",
    "SVI",
    "TraceEnum_ELBO",
    "TraceGraph_ELBO",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
    "autoguide",
    "config_enumerate",
    "infer_discrete",
    "reparam",
    "enable_validation",
    "is_validation_enabled",
    "set_nonfinite_mode",
]
