"""``miniprob.ops.indexing`` against Pyro's ``pyro.ops.indexing``."""

import pytest
import torch
from pyro.ops.indexing import vindex as pyro_vindex

from miniprob.ops.indexing import Vindex, vindex

X = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
I3 = torch.tensor([[0], [2]])
I4 = torch.tensor([1, 3, 0])
I5 = torch.tensor([4, 1, 1])
CASES = [
    (0,),
    (torch.tensor([1, 0]),),
    (0, I3),
    (Ellipsis, I4, I5),
    (Ellipsis, I4, slice(None)),
    (Ellipsis, I5.unsqueeze(-1)),
    (slice(None), I3, I4),
    (slice(None), slice(None), I4.unsqueeze(-1), I5),
    (1, slice(None), 2, I5),
    (Ellipsis, torch.tensor(2)),
    (),
    (Ellipsis,),
]


@pytest.mark.parametrize("args", CASES, ids=range(len(CASES)))
def test_vindex_matches_pyro(args):
    expected = pyro_vindex(X, args)
    assert torch.equal(vindex(X, args), expected)
    assert torch.equal(Vindex(X)[args], expected)


def test_vindex_rejects_partial_slice():
    with pytest.raises(NotImplementedError, match="full slices"):
        vindex(X, (slice(0, 1), I3))


def test_pyro_path_alias():
    import miniprob.ops.indexing as mod

    assert mod.Vindex is Vindex
