"""TensorBoard event files for every run, under ``<run>/tb/``: ``tensorboard --logdir results/runs``.

Written with tensorboardX (pinned), which needs no framework. It does try
``import torch`` when it is imported, to accept torch tensors; vaebench hands it
NumPy only, so that import is blocked unless torch is loaded already, and the
core still imports no framework (a jax run does not pay for torch).

What a run logs (``--no-tensorboard`` turns it off):

* ``train/loss``: the batch -ELBO at every step, one point per step; the
  runner reads them back ``FETCH_EVERY`` steps at a time anyway, so logging
  adds no synchronisation;
* ``test/neg_elbo``, ``test/recon``, ``test/kl``, ``train/neg_elbo`` and
  ``train/images_per_second`` per epoch, at the epoch's last global step;
* ``test/nll_k<k>`` (``test/nll_k100``): the importance-weighted test NLL of
  the final evaluation, and of every ``vaebench eval``, at the run's last
  global step, with the ``k`` that produced it in the tag, so a k=10 and a
  k=5000 NLL are two curves, never one; an ``eval`` by another backend adds
  its name (``test/nll_k100/jax``);
* ``grid`` (for a 2-D latent, the blog's manifold, so it can be watched
  forming), ``samples`` and ``reconstructions`` as images every epoch, drawn
  after the epoch's timing has closed;
* the run's config as text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.errors import VaebenchError
from vaebench.model.batches import to_float
from vaebench.plugin.contract import Model
from vaebench.run.evaluation import GRID_SIZE, grid_points, reconstruct
from vaebench.run.outputs.plots import tile
from vaebench.seeding import rng

FOLDER = "tb"


def _summary_writer() -> type:
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes tensorboardX's optional import fail fast
    try:
        from tensorboardX import SummaryWriter
    finally:
        if blocked:
            del sys.modules["torch"]
    return SummaryWriter


class RunLog:
    """One run's event file; every method is a no-op when ``enabled`` is false."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        """Open the event file now, so a ``tb/`` that cannot be written refuses the run before it trains."""
        self.writer = None
        if not enabled:
            return
        folder = Path(run_dir) / FOLDER
        try:
            if folder.is_symlink() and not folder.exists():
                raise FileNotFoundError(f"{folder} is a link to nothing")
            folder.mkdir(parents=True, exist_ok=True)
            self.writer = _summary_writer()(logdir=str(folder), flush_secs=30)
            self.writer.flush()
        except (OSError, ValueError) as exc:
            raise VaebenchError(
                f"cannot write TensorBoard files in {folder} ({getattr(exc, 'strerror', None) or exc}); "
                "remove or fix it, or pass --no-tensorboard"
            ) from None

    def config(self, config: dict[str, Any]) -> None:
        """The run's settings, as a JSON block TensorBoard's text tab renders."""
        if self.writer:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", 0)

    def losses(self, first_step: int, values: list[float]) -> None:
        """Per-step training losses; ``first_step`` is the global step of ``values[0]``."""
        if self.writer:
            for i, value in enumerate(values):
                self.writer.add_scalar("train/loss", value, first_step + i)

    def epoch(self, entry: dict[str, Any], step: int) -> None:
        """An epoch's figures from its history entry, at global step ``step``."""
        if not self.writer:
            return
        tags = {
            "test/neg_elbo": "test_neg_elbo",
            "test/recon": "test_recon",
            "test/kl": "test_kl",
            "train/neg_elbo": "train_neg_elbo",
            "train/objective": "train_objective",  # what a step minimised, when it is not the -ELBO
            "test/objective": "test_objective",
            "test/vq": "test_vq",  # a VQ model's codebook and commitment terms
            "train/images_per_second": "train_images_per_second",
            "train/lr": "lr",  # Adam's rate in the epoch (--lr-schedule)
        }
        for tag, key in tags.items():
            if entry.get(key) is not None and np.isfinite(entry[key]):
                self.writer.add_scalar(tag, entry[key], step)

    def nll(self, evaluation: dict[str, Any], step: int, backend: str | None = None) -> None:
        """An evaluation's IWAE NLL as ``test/nll_k<k>``; ``backend`` names a scorer other than the run's own.

        The tag carries ``k`` because the NLL is an estimate whose bias shrinks with ``k``: the same weights give
        a visibly higher number at k=10 than at k=5000, and one tag for both would draw them as one curve.
        An evaluation without an NLL (``--eval-k 0``) logs nothing.
        """
        if not self.writer or evaluation.get("test_nll") is None or not np.isfinite(evaluation["test_nll"]):
            return
        tag = f"test/nll_k{evaluation['iwae_k']}" + (f"/{backend}" if backend else "")
        self.writer.add_scalar(tag, evaluation["test_nll"], step)

    def pictures(self, model: Model, test_images: np.ndarray, latent_dim: int, seed: int, step: int) -> None:
        """The grid (or prior samples), decoded prior samples and reconstructions, as grey images; a VQ model,
        which has no prior to sample, its reconstructions alone."""
        if not self.writer:
            return
        originals = to_float(test_images[:16])
        pairs = np.concatenate([originals, np.clip(reconstruct(model, originals), 0, 1)])  # originals above
        self.writer.add_image("reconstructions", tile(pairs, 2, 16), step, dataformats="HW")
        if model.spec.quantizer is not None:
            return
        grid = model.decode(grid_points(latent_dim, seed))
        self.writer.add_image("grid", tile(grid, GRID_SIZE, GRID_SIZE), step, dataformats="HW")
        prior = rng(seed, "samples").standard_normal((100, latent_dim), dtype=np.float32)
        self.writer.add_image("samples", tile(model.decode(prior), 10, 10), step, dataformats="HW")

    def close(self) -> None:
        if self.writer:
            self.writer.close()
