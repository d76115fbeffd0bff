"""Inference (``miniprob.infer``): ELBO estimators, ``SVI`` and ``Predictive``.

Example::

    >>> from miniprob.infer import SVI, Trace_ELBO, TraceMeanField_ELBO, Predictive
"""

from ..validation import enable_validation, is_validation_enabled
from . import util  # noqa: F401 (Pyro's path ``pyro.infer.util``)
from .diagnostics import set_nonfinite_mode
from .elbo import ELBO
from .jit_elbo import JitTrace_ELBO
from .predictive import Predictive
from .svi import SVI
from .trace_elbo import Trace_ELBO
from .trace_mean_field_elbo import TraceMeanField_ELBO

__all__ = [
    "ELBO",
    "JitTrace_ELBO",
    "Predictive",
    "SVI",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
    "enable_validation",
    "is_validation_enabled",
    "set_nonfinite_mode",
]
