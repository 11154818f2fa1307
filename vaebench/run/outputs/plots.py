"""Pictures of a run, drawn headless from NumPy arrays (no framework needed).

Titles carry backend, model, epoch and test -ELBO, so a picture pulled out of
its folder still says what it shows.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from vaebench.io.fileio import atomic_write_bytes


def pyplot():
    """matplotlib's pyplot on the Agg canvas, with mathtext off.

    Titles and labels carry backend names and folder names from the user; with
    mathtext on, a name such as ``$\\frac`` would be parsed as TeX and crash the
    picture. vaebench writes no maths into its pictures.
    """
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``(rows*cols, h, w[, 1])`` -> one ``(rows*h, cols*w)`` mosaic, row-major."""
    images = images.reshape(rows, cols, *images.shape[1:3])
    return images.transpose(0, 2, 1, 3).reshape(rows * images.shape[2], cols * images.shape[3])


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())


def save_grid(decoded: np.ndarray, path: Path, title: str, axis: np.ndarray | None = None) -> None:
    """The 20x20 manifold (or prior samples) as one mosaic.

    ``decoded`` is ``(n*n, 28, 28, 1)`` in row-major cell order; ``axis`` the
    latent coordinates of the columns (and, reversed, of the rows) for a 2-D
    latent, or ``None`` for prior samples.
    """
    plt = pyplot()
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
    plt = pyplot()
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


def save_latent(means: np.ndarray, labels: np.ndarray, path: Path, title: str, extent: tuple[float, float] | None) -> None:
    """Test-set posterior means (first two dimensions) coloured by label, the grid's extent dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    second = means[:, 1] if means.shape[1] > 1 else np.zeros(len(means))
    points = ax.scatter(means[:, 0], second, c=labels, cmap="tab10", s=3, alpha=0.6, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    if extent is not None:
        lo, hi = extent
        ax.plot([lo, hi, hi, lo, lo], [lo, lo, hi, hi, lo], "k--", lw=1, label="grid.png extent")
        ax.legend(loc="upper right")
    ax.set_xlabel("E[z[0] | x]")
    ax.set_ylabel("E[z[1] | x]" if means.shape[1] > 1 else "")
    ax.set_title(title + "\n(test-set posterior means" + (", first two dimensions)" if means.shape[1] > 2 else ")"))
    _save(fig, path)


#: what :func:`save_curves` draws by default: a Gaussian model's train and test -ELBO
ELBO_CURVES = (("train_neg_elbo", "train -ELBO"), ("test_neg_elbo", "test -ELBO"))


def save_curves(
    history: list[dict],
    path: Path,
    title: str,
    series: tuple[tuple[str, str], ...] = ELBO_CURVES,
    unit: str = "nats per image",
) -> None:
    """Train and test -ELBO (or the history's ``series``, key and label) per epoch, and against cumulative
    training wall-clock seconds."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    seconds = np.cumsum([h["epoch_seconds"] for h in history])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, xs, label in ((left, epochs, "epoch"), (right, seconds, "training wall-clock seconds")):
        for (key, name), marker in zip(series, ("o-", "s-", "^-"), strict=False):
            ax.plot(xs, [h.get(key) for h in history], marker, label=name)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    left.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no tick at epoch 1.5
    left.set_ylabel(unit)
    left.legend()
    fig.suptitle(title)
    _save(fig, path)


def save_code_usage(counts: np.ndarray, path: Path, title: str) -> None:
    """A VQ model's codebook use: the share of the test set's code positions each code took, most used first,
    with the perplexity and the codes never chosen in the title (a collapsed codebook is one tall bar)."""
    plt = pyplot()
    counts = np.asarray(counts, np.float64)
    share = np.sort(counts / counts.sum())[::-1]
    p = share[share > 0]
    perplexity = float(np.exp(-np.sum(p * np.log(p))))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(np.arange(len(share)), share, width=1.0, color="tab:blue")
    ax.axhline(1 / len(share), color="k", ls="--", lw=1, label=f"uniform use (1/{len(share)})")
    ax.set_xlabel("code, by rank of use")
    ax.set_ylabel("share of test-set code positions")
    ax.legend(loc="upper right")
    unused = int(np.sum(counts == 0))
    ax.set_title(f"{title}\n(perplexity {perplexity:.1f} of {len(share)}; {unused} codes never used)")
    _save(fig, path)
