"""Say which sites and parameters made a loss non-finite. Runs only once a loss already is
non-finite, so a finite loss pays nothing for it.

For every model and guide sample site whose log density is NaN or infinite, the report names
the site, says how many elements are non-finite, and names the parameters feeding it: the
param-store entries that its distribution's arguments or its value were computed from (found
by walking the autograd graph back to the store's leaves), with their values. Parameters that
are themselves non-finite are listed too.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import Trace_ELBO
    >>> def model():
    ...     s = pyro.param("s", torch.tensor(0.0))
    ...     pyro.sample("y", dist.Normal(0.0, s), obs=torch.tensor(1.0))
    >>> try:
    ...     Trace_ELBO().differentiable_loss(model, lambda: None)
    ... except ValueError as e:
    ...     print(str(e).splitlines()[1])
      model site 'y': log_prob_sum = nan (1 of 1 elements non-finite)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import torch

from ..params import ParamStore, get_param_store
from ..poutine.trace_struct import Trace

_MODE = ["raise"]


def set_nonfinite_mode(mode: str) -> None:
    """``"raise"`` (default): a non-finite loss raises ``ValueError``; ``"warn"``: it warns
    (``UserWarning``) and the step goes on.

    Example::

        >>> from miniprob.infer import set_nonfinite_mode
        >>> set_nonfinite_mode("warn"); set_nonfinite_mode("raise")
    """
    if mode not in ("raise", "warn"):
        raise ValueError(f"non-finite mode must be 'raise' or 'warn', got {mode!r}")
    _MODE[0] = mode


def get_nonfinite_mode() -> str:
    """The current mode: ``"raise"`` or ``"warn"``."""
    return _MODE[0]


def _describe(t: torch.Tensor) -> str:
    t = t.detach()
    if t.numel() == 1:
        return str(t.item())
    bad = int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0
    flat = t.flatten()[:4].tolist()
    more = ", ..." if t.numel() > 4 else ""
    bad_text = f", {bad} non-finite" if bad else ""
    return f"shape {tuple(t.shape)}: {flat}{more}{bad_text}"


def _distribution_tensors(fn: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors a distribution holds (its arguments) by name, through wrappers like
    ``base_dist`` (named ``base_dist.loc``, ...)."""
    found = {}
    for key, value in getattr(fn, "__dict__", {}).items():
        if isinstance(value, torch.Tensor):
            found[prefix + key] = value
        elif isinstance(value, torch.distributions.Distribution) and prefix.count(".") < 8:
            found.update(_distribution_tensors(value, f"{prefix}{key}."))
    return found


def _leaves_reaching(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The autograd leaves that ``tensors`` were computed from (empty without a graph)."""
    leaves: dict[int, torch.Tensor] = {}
    seen: set = set()
    todo = []
    for t in tensors:
        if t.grad_fn is not None:
            todo.append(t.grad_fn)
        elif t.requires_grad:
            leaves[id(t)] = t
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves[id(variable)] = variable
        todo.extend(f for f, _ in node.next_functions if f is not None)
    return list(leaves.values())


def _param_names(leaves: Iterable[torch.Tensor], store: ParamStore) -> list[str]:
    names = (store.param_name(leaf) for leaf in leaves)
    return sorted({name for name in names if name is not None})


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _param_storages(traces: Sequence[Trace]) -> dict[int, str]:
    """Param values read in ``traces``, by storage: without an autograd graph (under
    ``torch.no_grad``), a distribution argument that is a view of a param is found this way."""
    found = {}
    for trace in traces:
        for name, site in trace.nodes.items():
            if site["type"] == "param" and isinstance(site["value"], torch.Tensor):
                found[_storage(site["value"])] = name
    return found


def _feeding(tensors: list[torch.Tensor], storages: dict[int, str], store: ParamStore) -> set[str]:
    names = set(_param_names(_leaves_reaching(tensors), store))
    names.update(storages[_storage(t)] for t in tensors if _storage(t) in storages)
    return {name for name in names if name in store}


def _param_text(name: str, store: ParamStore) -> str:
    value = store[name]
    text = f"{name} = {_describe(value)}"
    leaf = store.unconstrained(name)
    if leaf is not value:
        text += f" (unconstrained {_describe(leaf)})"
    return text


def _site_report(
    where: str, trace: Trace, store: ParamStore, storages: dict[int, str]
) -> list[str]:
    lines = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        # The site's terms of the loss: its log density, and (TraceMeanField_ELBO) the
        # closed-form KL of a guide site to the model's distribution.
        terms = []
        for label, term in (("log_prob_sum", site.get("log_prob")), ("KL sum", site.get("kl"))):
            if isinstance(term, torch.Tensor) and not bool(torch.isfinite(term).all()):
                terms.append((label, term))
        if not terms:
            continue
        for label, term in terms:
            bad = int((~torch.isfinite(term)).sum())
            lines.append(
                f"  {where} site '{name}': {label} = {term.sum().item()} "
                f"({bad} of {term.numel()} elements non-finite)"
            )
        fn = site["fn"]
        arg_tensors = _distribution_tensors(fn)
        bad_args = [
            f"{k}={_describe(v)}"
            for k, v in arg_tensors.items()
            if v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad_args:
            lines.append(f"    non-finite distribution arguments: {'; '.join(bad_args)}")
        value = site["value"]
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            lines.append(f"    non-finite value: {_describe(value)}")
        via_args = sorted(_feeding(list(arg_tensors.values()), storages, store))
        via_value = []
        if isinstance(value, torch.Tensor):
            via_value = sorted(_feeding([value], storages, store) - set(via_args))
        for label, names in (("its distribution", via_args), ("its value", via_value)):
            if names:
                params = "; ".join(_param_text(n, store) for n in names)
                lines.append(f"    parameters feeding {label}: {params}")
    return lines


def _nonfinite_params(traces: Sequence[Trace], store: ParamStore) -> list[str]:
    """The params read in ``traces`` whose constrained value is non-finite."""
    names = []
    for trace in traces:
        for name, site in trace.nodes.items():
            if site["type"] != "param" or name in names or name not in store:
                continue
            value = site["value"]
            if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all()):
                names.append(name)
    return [_param_text(n, store) for n in names]


def nonfinite_report(loss: float, particles: Sequence[tuple[Trace, Trace]]) -> str:
    """The text :func:`raise_nonfinite` raises with: one line per offending site.

    ``particles`` are the ``(model_trace, guide_trace)`` pairs the loss was computed from.
    """
    store = get_param_store()
    lines = [f"loss is {loss}"]
    for i, (model_trace, guide_trace) in enumerate(particles):
        storages = _param_storages((model_trace, guide_trace))
        sites = _site_report("model", model_trace, store, storages)
        sites += _site_report("guide", guide_trace, store, storages)
        if sites and len(particles) > 1:
            lines.append(f" particle {i}:")
        lines += sites
    traces = [tr for pair in particles for tr in pair]
    bad_params = _nonfinite_params(traces, store)
    if bad_params:
        lines.append(f"  non-finite parameters: {'; '.join(bad_params)}")
    if len(lines) == 1:
        if not particles:
            lines.append("  (a loss without traces: no sites to inspect)")
        else:
            lines.append("  no single site is non-finite: the sum overflowed or a term cancelled")
    return "\n".join(lines)


def raise_nonfinite(
    loss: float,
    model_trace: Trace | None = None,
    guide_trace: Trace | None = None,
    particles: Sequence[tuple[Trace, Trace]] | None = None,
) -> None:
    """Raise ``ValueError`` (or warn, see :func:`set_nonfinite_mode`) naming every model and
    guide site whose log density is non-finite, and the parameters feeding each."""
    if particles is None:
        particles = [] if model_trace is None else [(model_trace, guide_trace or Trace())]
    message = nonfinite_report(loss, particles)
    if _MODE[0] == "warn":
        warnings.warn(message, stacklevel=3)
        return
    raise ValueError(message)


def check_loss(loss: float) -> None:
    """Raise (or warn) for a non-finite loss that comes without traces (a callable loss)."""
    if not math.isfinite(loss):
        raise_nonfinite(loss)
