"""The pictures of a run, drawn through the contract: the same latent points and images for every backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vaebench.io.datasets import Dataset
from vaebench.model.batches import to_float
from vaebench.model.config import TrainConfig
from vaebench.plugin.contract import Model
from vaebench.run.evaluation import code_statistics, grid_points, reconstruct
from vaebench.run.outputs.plots import save_code_usage, save_curves, save_grid, save_latent, save_reconstructions
from vaebench.seeding import rng

#: a VQ model's curves: the loss it trains on, and its test loss and reconstruction term
VQ_CURVES = (("train_objective", "train loss"), ("test_loss", "test loss"), ("test_recon", "test reconstruction"))


def write_pictures(
    model: Model,
    dataset: Dataset,
    test_images: np.ndarray,
    cfg: TrainConfig,
    run_dir: Path,
    history: list[dict],
    title: str,
    tick: Callable[[], None] = lambda: None,
) -> None:
    """The run's pictures, each titled with backend, model, epoch and test -ELBO. A VQ model has no prior to
    sample nor a posterior to scatter: its pictures are ``reconstructions.png``, ``codes.png`` (the codebook's
    use, :func:`~vaebench.run.outputs.plots.save_code_usage`) and ``curves.png`` of its loss.

    ``grid.png`` (the blog's 20x20 manifold, or prior samples for a latent above 2),
    ``samples.png`` (decoded prior samples), ``reconstructions.png``, ``latent.png``
    (test posterior means by label), ``curves.png`` (-ELBO per epoch and per second,
    when there is an epoch). ``tick`` runs between pictures and may raise to stop.
    """
    if model.spec.quantizer is not None:
        originals = to_float(test_images[:32])
        save_reconstructions(originals, np.clip(reconstruct(model, originals), 0, 1), run_dir / "reconstructions.png", title)
        tick()
        save_code_usage(code_statistics(model, test_images, cfg.eval_batch_size)["code_counts"], run_dir / "codes.png", title)
        tick()
        if history:
            save_curves(history, run_dir / "curves.png", title, VQ_CURVES, "loss (MSE / variance + VQ terms)")
        return
    z = grid_points(cfg.latent_dim, cfg.seed)
    axis = np.unique(z[:, 0]) if cfg.latent_dim == 2 else None
    save_grid(model.decode(z), run_dir / "grid.png", title, axis)
    tick()
    prior = rng(cfg.seed, "samples").standard_normal((100, cfg.latent_dim), dtype=np.float32)
    save_grid(model.decode(prior), run_dir / "samples.png", title, None)
    tick()
    originals = to_float(test_images[:32])
    mean, _ = model.encode(originals)
    save_reconstructions(originals, model.decode(mean), run_dir / "reconstructions.png", title + " (decoded posterior means)")
    tick()
    means = np.concatenate([model.encode(to_float(test_images[i : i + 1000]))[0] for i in range(0, len(test_images), 1000)])
    extent = (float(axis[0]), float(axis[-1])) if axis is not None else None
    save_latent(means, dataset.test_labels, run_dir / "latent.png", title, extent)
    tick()
    if history:
        save_curves(history, run_dir / "curves.png", title)
