"""Fit a model with PyTorch Lightning through the ELBO module, on two CPU processes (DDP).

``python tests/lightning_fit.py OUT`` (Lightning's "ddp" strategy starts the second process by
running this script again). Each rank writes its fitted parameters to ``OUT/rank{r}.pt``. As in
Pyro's examples/svi_lightning.py: the model never mentions Lightning; a minibatch comes with
its indices, and ``plate("data", N, subsample=idx)`` scales it to the whole data set.
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.infer import Trace_ELBO

N, BATCH = 256, 16
TRUE_LOC, TRUE_SCALE = 3.0, 0.5


def model(x, idx):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("obs", dist.Normal(loc, scale), obs=x)


def guide(x, idx):
    m = pyro.param("loc_map", lambda: torch.randn(()))
    s = pyro.param("scale_map", lambda: torch.rand(()) + 0.5, constraint=dist.constraints.positive)
    pyro.sample("loc", dist.Delta(m))
    pyro.sample("scale", dist.Delta(s))


class ELBOTraining(pl.LightningModule):
    def __init__(self, loss_fn):
        super().__init__()
        self.loss_fn = loss_fn

    def training_step(self, batch, batch_idx):
        return self.loss_fn(*batch)

    def configure_optimizers(self):
        return torch.optim.Adam(self.loss_fn.parameters(), lr=0.1)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the parameters' random starts: one fit, the same every run
    data = TRUE_LOC + TRUE_SCALE * torch.randn(N, generator=torch.Generator().manual_seed(0))
    dataset = TensorDataset(data, torch.arange(N))
    loss_fn = Trace_ELBO()(model, guide)
    loss_fn(*dataset[:BATCH])  # creates the parameters (DDP makes rank 0's everyone's)
    trainer = pl.Trainer(
        strategy="ddp",
        devices=2,
        accelerator="cpu",
        max_epochs=30,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    # Lightning gives each rank its shard through a DistributedSampler.
    trainer.fit(ELBOTraining(loss_fn), DataLoader(dataset, batch_size=BATCH, shuffle=True))
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    torch.save(params, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
