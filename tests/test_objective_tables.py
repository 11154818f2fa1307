"""The over-seeds table across objectives: an objective is a group label (not a clash), each group shows its
split into reconstruction and KL, its NLL with k and its active units, and a beta series says its trend."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaebench.measure.stats import trend
from vaebench.report.tables import beta_trends, comparability_notes, seed_rows


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 2.0, 3.0], "increasing"),
        ([1.0, 2.0], "increasing"),
        ([3.0, 2.0, 1.0], "decreasing"),
        ([2.0, 1.0], "decreasing"),
        ([1.0, 1.0, 2.0], "non-decreasing"),
        ([2.0, 1.0, 1.0], "non-increasing"),
        ([1.0, 1.0, 1.0], "flat"),
        ([1.0, 1.0], "flat"),
        ([1.0, 3.0, 2.0], "not monotonic"),
        ([2.0, 1.0, 3.0], "not monotonic"),
        ([1.0, 1.0, 0.5, 2.0], "not monotonic"),
        ([2.0, 1.0, 1.5], "not monotonic"),  # a rise smaller than 1 after a fall
        ([1.0, 2.0, 1.5], "not monotonic"),
    ],
)
def test_trend_names_the_direction(values: list[float], expected: str) -> None:
    assert trend(values) == expected


def test_trend_needs_a_series() -> None:
    with pytest.raises(ValueError, match="^a trend needs at least two values$"):
        trend([1.0])


def _run(backend: str, seed: int, objective: str, beta: float, recon: float, kl: float, au: int, nll: float | None = None):
    cfg = {"backend": backend, "model": "mlp", "dataset": "mnist", "epochs": 5, "batch_size": 128, "latent_dim": 20}
    cfg.update(lr=0.001, seed=seed, binarize=False, limit_train=None, compile=False, options={}, precision="fp32")
    cfg.update(objective=objective, beta=beta, iw_samples=1)
    final = {"test_neg_elbo": recon + kl, "test_recon": recon, "test_kl": kl, "active_units": au}
    if nll is not None:
        final.update(test_nll=nll, iwae_k=100)
    metrics = {"status": "completed", "config": cfg, "final": final, "history": [], "placement": {"exclusive": False}}
    return Path(f"/r/{backend}-{objective}{beta:g}-{seed}"), metrics


def _beta_sweep(kl4: tuple[float, float] = (9.0, 8.0)) -> list:
    runs = []
    for seed in (0, 1):
        runs.append(_run("torch", seed, "vae", 1.0, 84.0 + seed, 25.0 - seed, 20, nll=104.0 + seed))
        runs.append(_run("torch", seed, "beta-vae", 2.0, 97.0 + seed, 16.0 - seed, 20))
        runs.append(_run("torch", seed, "beta-vae", 4.0, 118.0 + seed, kl4[seed], 15 + seed))
    return runs


def test_each_objective_is_its_own_group_with_its_split() -> None:
    runs = _beta_sweep()
    assert comparability_notes(runs) == []  # different objectives are an axis, not runs that look alike
    lines = seed_rows(runs).lines()
    assert len(lines) == 4, lines  # header and one row per beta
    plain, beta2, beta4 = lines[1], lines[2], lines[3]
    assert "beta-vae" not in plain and "beta-vae beta=2" in beta2 and "beta-vae beta=4" in beta4
    assert "84.50 ± 0.71" in plain and "24.50 ± 0.71" in plain and "104.50 ± 0.71 (k=100)" in plain
    assert "20.0 ± 0.0" in plain and "15.5 ± 0.7" in beta4
    assert "(k=" not in beta2  # no run of that group computed an NLL


def test_a_beta_series_says_whether_the_claim_held() -> None:
    (line,) = beta_trends(_beta_sweep())
    assert line.startswith("mlp (bs128 lr0.001 ep5 z20) on torch, beta 1 -> 2 -> 4: ")
    assert "KL 24.50 -> 15.50 -> 8.50 (decreasing)" in line
    assert "recon 84.50 -> 97.50 -> 118.50 (increasing)" in line
    assert "AU 20.00 -> 20.00 -> 15.50 (non-increasing)" in line
    (broken,) = beta_trends(_beta_sweep(kl4=(30.0, 30.0)))
    assert "KL 24.50 -> 15.50 -> 30.00 (not monotonic)" in broken


def test_no_series_without_two_betas_and_iwae_is_not_one() -> None:
    runs = [r for r in _beta_sweep() if r[1]["config"]["objective"] == "vae"]
    assert beta_trends(runs) == []
    iwae = [_run("torch", s, "iwae", 1.0, 80.0, 20.0, 20) for s in (0, 1)]
    for _, m in iwae:
        m["config"]["iw_samples"] = 5
    assert beta_trends(runs + iwae) == []
    assert "iwae k=5" in seed_rows(runs + iwae).lines()[2]
