"""Pictures of a run, drawn headless from NumPy arrays (no framework needed).

Titles carry backend, model, epoch and test -ELBO, so a picture pulled out of
its folder still says what it shows.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from vaebench.fileio import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``(rows*cols, h, w[, 1])`` -> one ``(rows*h, cols*w)`` mosaic, row-major."""
    images = images.reshape(rows, cols, *images.shape[1:3])
    return images.transpose(0, 2, 1, 3).reshape(rows * images.shape[2], cols * images.shape[3])


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())


def save_grid(decoded: np.ndarray, path: Path, title: str, axis: np.ndarray | None = None) -> None:
    """The 20x20 manifold (or prior samples) as one mosaic.

    ``decoded`` is ``(n*n, 28, 28, 1)`` in row-major cell order; ``axis`` the
    latent coordinates of the columns (and, reversed, of the rows) for a 2-D
    latent, or ``None`` for prior samples.
    """
    plt = _pyplot()
    n = round(np.sqrt(len(decoded)))
    mosaic = tile(decoded, n, n)
    fig, ax = plt.subplots(figsize=(8.5, 8.5))
    ax.imshow(mosaic, cmap="Greys_r", vmin=0, vmax=1)
    size = decoded.shape[1]
    centres = np.arange(n) * size + size / 2
    if axis is not None:
        ticks = centres[::3]
        ax.set_xticks(ticks, [f"{v:.2f}" for v in axis[::3]])
        ax.set_yticks(ticks, [f"{v:.2f}" for v in axis[::-1][::3]])
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]")
    else:
        ax.set_axis_off()
        title += "\n(prior samples z ~ N(0, I))"
    ax.set_title(title)
    _save(fig, path)


def save_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, path: Path, title: str) -> None:
    """Test images (odd rows) above their reconstructions (even rows), 16 a row."""
    plt = _pyplot()
    cols = 16
    rows = len(originals) // cols
    pairs = np.stack(
        [originals[: rows * cols].reshape(rows, cols, 28, 28), reconstructions[: rows * cols].reshape(rows, cols, 28, 28)], 1
    )
    mosaic = tile(pairs.reshape(-1, 28, 28), 2 * rows, cols)
    fig, ax = plt.subplots(figsize=(cols * 0.6, 2 * rows * 0.6 + 0.6))
    ax.imshow(mosaic, cmap="Greys_r", vmin=0, vmax=1)
    ax.set_yticks(
        [28 * (2 * r) + 14 for r in range(rows)] + [28 * (2 * r + 1) + 14 for r in range(rows)],
        ["input"] * rows + ["reconstruction"] * rows,
    )
    ax.set_xticks([])
    ax.set_title(title)
    _save(fig, path)
