"""Inference (``miniprob.infer``): ELBO estimators, ``SVI`` and ``Predictive``.

Example::

    >>> from miniprob.infer import SVI, Trace_ELBO, TraceMeanField_ELBO, Predictive
"""

from .diagnostics import set_nonfinite_mode
from .elbo import ELBO
from .jit_elbo import JitTrace_ELBO, JitTraceMeanField_ELBO
from .predictive import Predictive
from .svi import SVI
from .trace_elbo import Trace_ELBO
from .trace_mean_field_elbo import TraceMeanField_ELBO

__all__ = [
    "ELBO",
    "JitTrace_ELBO",
    "JitTraceMeanField_ELBO",
    "Predictive",
    "SVI",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
    "set_nonfinite_mode",
]
