"""Say which sites made a loss non-finite. Runs only once a loss already is non-finite.

Example::

    >>> import math
    >>> from miniprob.poutine.trace_struct import Trace
    >>> try:
    ...     raise_nonfinite(math.nan, Trace(), Trace())
    ... except ValueError as e:
    ...     print(str(e).splitlines()[0])
    loss is nan
"""

from __future__ import annotations

import warnings

import torch

from ..poutine.trace_struct import Trace

_MODE = ["raise"]


def set_nonfinite_mode(mode: str) -> None:
    """``"raise"`` (default): a non-finite loss raises ``ValueError``; ``"warn"``: it warns."""
    if mode not in ("raise", "warn"):
        raise ValueError(f"non-finite mode must be 'raise' or 'warn', got {mode!r}")
    _MODE[0] = mode


def _site_report(where: str, trace: Trace) -> list[str]:
    lines = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        lp = site.get("log_prob_sum")
        if lp is None or bool(torch.isfinite(lp)):
            continue
        params = [
            f"{k}={v.detach().flatten()[:4].tolist()}"
            for k, v in getattr(site["fn"], "__dict__", {}).items()
            if isinstance(v, torch.Tensor) and not bool(torch.isfinite(v).all())
        ]
        detail = f" (non-finite parameters: {', '.join(params)})" if params else ""
        lines.append(f"  {where} site '{name}': log_prob_sum = {lp.item()}{detail}")
    return lines


def raise_nonfinite(loss: float, model_trace: Trace, guide_trace: Trace) -> None:
    """Raise (or warn) naming every model and guide site whose log density is non-finite."""
    lines = [f"loss is {loss}"]
    lines += _site_report("model", model_trace) + _site_report("guide", guide_trace)
    if len(lines) == 1:
        lines.append("  no single site is non-finite: the sum overflowed")
    message = "\n".join(lines)
    if _MODE[0] == "warn":
        warnings.warn(message, stacklevel=3)
        return
    raise ValueError(message)
