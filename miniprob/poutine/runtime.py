"""Pyro's path ``pyro.poutine.runtime``: the handler stack and messages, which live in
:mod:`miniprob.runtime` (one object under two names).

Example::

    >>> from miniprob.poutine.runtime import apply_stack, am_i_wrapped, effectful
    >>> import miniprob.runtime
    >>> apply_stack is miniprob.runtime.apply_stack, am_i_wrapped()
    (True, False)
"""

from ..runtime import (  # noqa: I001
    _DIM_ALLOCATOR,  # noqa: F401 (Pyro's name; its ``_stack`` lists the plates using dims)
    CondIndepStackFrame,
    Message,
    am_i_wrapped,
    apply_stack,
    default_process_message,
    effectful,
    get_mask,
    get_plates,
    get_stack,
    new_message,
)
from .escape import NonlocalExit

__all__ = [
    "CondIndepStackFrame",
    "Message",
    "NonlocalExit",
    "am_i_wrapped",
    "apply_stack",
    "default_process_message",
    "effectful",
    "get_mask",
    "get_plates",
    "get_stack",
    "new_message",
]
