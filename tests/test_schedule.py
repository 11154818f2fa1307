"""``--lr-schedule``: the rates per epoch (Burda et al. 2015's stages), how a run applies them, and the recipes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaebench.errors import ConfigError
from vaebench.model.config import AdamConfig, TrainConfig
from vaebench.model.schedule import BURDA_EPOCHS, BURDA_STAGES, SCHEDULES, burda_stage, learning_rate

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize(
    ("epoch", "stage"),
    [(1, 0), (2, 1), (4, 1), (5, 2), (13, 2), (14, 3), (40, 3), (41, 4), (121, 4), (122, 5), (364, 5), (365, 6),
     (1093, 6), (1094, 7), (3280, 7), (3281, 7), (10**6, 7)],
)  # fmt: skip
def test_burda_stage_i_lasts_3_to_the_i_epochs(epoch, stage):
    assert burda_stage(epoch) == stage


def test_the_schedule_in_whole_and_its_rates():
    assert (BURDA_STAGES, BURDA_EPOCHS) == (8, 3280) and SCHEDULES == ("constant", "burda")
    assert [sum(burda_stage(e) == i for e in range(1, BURDA_EPOCHS + 1)) for i in range(8)] == [3**i for i in range(8)]
    assert learning_rate("burda", 1e-3, 1) == 1e-3  # stage 0: exactly the base rate
    assert learning_rate("burda", 1e-3, 2) == pytest.approx(1e-3 * 10 ** (-1 / 7), rel=1e-15)
    assert learning_rate("burda", 2e-3, 14) == pytest.approx(2e-3 * 10 ** (-3 / 7), rel=1e-15)
    assert learning_rate("burda", 1e-3, 3280) == pytest.approx(1e-3 * 10 ** (-1), rel=1e-15)
    assert learning_rate("burda", 1e-3, 5000) == learning_rate("burda", 1e-3, 1094)
    assert all(learning_rate("constant", 3e-4, e) == 3e-4 for e in (1, 2, 14, 5000))
    with pytest.raises(ConfigError, match="^unknown --lr-schedule 'cosine'; choose one of constant, burda$"):
        learning_rate("cosine", 1e-3, 1)
    with pytest.raises(ConfigError, match="^epochs count from 1, got 0$"):
        burda_stage(0)


def test_a_config_gives_each_epochs_adam_and_refuses_a_bad_schedule_or_epsilon():
    cfg = TrainConfig(backend="numpy", model="mlp", lr=1e-3, lr_schedule="burda", adam_eps=1e-4).resolved()
    assert cfg.adam == cfg.adam_at(1) == AdamConfig(lr=1e-3, eps=1e-4)
    assert cfg.adam_at(5) == AdamConfig(lr=pytest.approx(1e-3 * 10 ** (-2 / 7)), eps=1e-4)
    assert TrainConfig(backend="numpy").resolved().adam == AdamConfig()  # the defaults: constant, eps 1e-8
    with pytest.raises(ConfigError, match="unknown --lr-schedule 'step'"):
        TrainConfig(backend="numpy", lr_schedule="step").resolved()
    for eps in (0.0, -1e-8, 1.0, math.inf, math.nan, True):
        with pytest.raises(ConfigError, match="--adam-eps must be a number between 0 and 1"):
            TrainConfig(backend="numpy", adam_eps=eps).resolved()


def _vaebench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "vaebench.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_a_burda_run_changes_the_rate_at_each_stage_and_resumes_bit_for_bit(tmp_path, tiny_dir, monkeypatch):
    """Epoch 1 at --lr, epochs 2-4 at lr * 10**(-1/7); the first epoch is the constant run's, the second is not; a run
    cut in epoch 3 and resumed is the whole run to the last digit (the rebuilt model carries Adam's state)."""
    from click.testing import CliRunner

    from vaebench.cli import cli
    from vaebench.plugin.contract import Model
    from vaebench.run import runner

    args = ["run", "-b", "numpy", "-m", "mlp", "--epochs", "3", "--batch-size", "64", "--latent-dim", "4", "-q"]
    args += ["--data-dir", str(tiny_dir), "--adam-eps", "1e-4"]
    for name, extra in (("burda", ["--lr-schedule", "burda"]), ("constant", [])):
        proc = _vaebench(*args, *extra, "--out", str(tmp_path / name), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    burda, constant = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("burda", "constant"))
    assert burda["config"]["lr_schedule"] == "burda" and burda["config"]["adam_eps"] == 1e-4
    second = 1e-3 * 10 ** (-1 / 7)
    assert [e["lr"] for e in burda["history"]] == [1e-3, pytest.approx(second, rel=1e-15), pytest.approx(second, rel=1e-15)]
    assert [e["lr"] for e in constant["history"]] == [1e-3] * 3
    assert burda["history"][0]["train_neg_elbo"] == constant["history"][0]["train_neg_elbo"]  # the same first epoch
    assert burda["history"][1]["train_neg_elbo"] != constant["history"][1]["train_neg_elbo"]  # a smaller step after it

    original, train_staged = runner.train_batches, Model.train_staged

    def batches(*a, **kw):
        batches.epoch = a[4]
        return original(*a, **kw)

    def staged_step(self, staged):
        if batches.epoch == 3:
            os.kill(os.getpid(), __import__("signal").SIGINT)
        return train_staged(self, staged)

    monkeypatch.setattr(runner, "train_batches", batches)
    monkeypatch.setattr(Model, "train_staged", staged_step)
    CliRunner().invoke(cli, [*args, "--lr-schedule", "burda", "--out", str(tmp_path / "cut")])
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["status"] == "interrupted"
    proc = _vaebench("run", "--resume", str(tmp_path / "cut"), "-q", "--data-dir", str(tiny_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert cut["resumed"] and cut["config"]["lr_schedule"] == "burda"
    for a, b in zip(burda["history"], cut["history"], strict=True):
        assert b["lr"] == a["lr"]
        for key in ("train_neg_elbo", "test_neg_elbo"):
            assert b[key] == a[key], (a["epoch"], key)


def test_the_paper_recipe_and_the_short_one_are_sweeps_that_expand():
    from vaebench.sweep import plan

    grids = {n: plan.make_grid(plan.read_toml(RECIPES / f"iwae-{n}.toml")) for n in ("paper", "short")}
    paper, short = (grids[n].expand() for n in ("paper", "short"))
    assert len(paper) == len(short) == 2 * 2 * 3  # torch, jax x vae, iwae (K=5) x 3 seeds
    for run in paper:
        cfg = run.config
        assert (cfg.model, cfg.batch_size, cfg.epochs, cfg.lr, cfg.lr_schedule, cfg.adam_eps) == (
            "iwae-mlp",
            20,
            BURDA_EPOCHS,
            1e-3,
            "burda",
            1e-4,
        )
        assert cfg.binarize and cfg.eval_k == 5000 and cfg.iw_samples == (5 if cfg.objective == "iwae" else 1)
    for run in short:
        cfg = run.config
        assert (cfg.epochs, cfg.limit_train, cfg.eval_k, cfg.lr_schedule, cfg.adam_eps) == (13, 20000, 500, "burda", 1e-4)
        assert burda_stage(cfg.epochs) == 2 and burda_stage(cfg.epochs + 1) == 3  # the first three stages, whole


def test_a_schedule_or_an_epsilon_is_part_of_the_recipe_runs_are_compared_by_and_older_runs_read_as_before():
    from vaebench.run.results import comparable

    base = {"model": "mlp", "latent_dim": 20, "dataset": "mnist", "batch_size": 128, "lr": 1e-3, "epochs": 10}
    older = comparable({"config": base})  # a run from before --lr-schedule: no such keys
    assert comparable({"config": {**base, "lr_schedule": "constant", "adam_eps": 1e-8}}) == older
    burda = comparable({"config": {**base, "lr_schedule": "burda", "adam_eps": 1e-8}})
    assert burda["recipe"] == older["recipe"] + " lr_schedule=burda"
    eps = comparable({"config": {**base, "lr_schedule": "constant", "adam_eps": 1e-4}})
    assert eps["recipe"] == older["recipe"] + " adam_eps=0.0001"
