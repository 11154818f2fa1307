"""The importance-weighted NLL in TensorBoard, with its k in the tag (issue #27), read back with TensorBoard's own reader.

TensorBoard once showed every -ELBO curve and no NLL; and an NLL without its k is ambiguous, since the same
weights give a visibly higher figure at k=10 than at k=5000. These tests train a real run (the NumPy backend, a
tiny data set), score it again with ``vaebench eval`` in a fresh process, and read the event files back with
``tensorboard``'s ``EventAccumulator``, the code the viewer itself runs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

QUICK = ["run", "--backend", "numpy", "--model", "mlp", "--epochs", "2", "--batch-size", "32", "-q"]
STEPS = 2 * (256 // 32)  # the run's last global step: two epochs of the tiny set's 256 images at batch 32


def _cli(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vaebench.cli", *map(str, args)], capture_output=True, text=True, timeout=600, env=env
    )


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run's tb/ folder, as TensorBoard loads it: ``{tag: [(step, value), ...]}``."""
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason='the `tensorboard` viewer is the "tensorboard" extra of the README\'s install',
    )
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted((run / "tb").glob("events.out.tfevents.*")):  # a run, then each eval, writes its own file
        acc = accumulator.EventAccumulator(str(path), size_guidance={accumulator.SCALARS: 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


@pytest.fixture
def run(tiny_dir, tmp_path) -> Path:
    out = tmp_path / "run"
    proc = _cli(*QUICK, "--eval-k", "8", "--data-dir", tiny_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_final_nll_is_in_tensorboard_under_a_tag_that_names_its_k(run):
    final = json.loads((run / "metrics.json").read_text())["final"]
    scalars = _scalars(run)
    assert final["iwae_k"] == 8
    assert scalars["test/nll_k8"] == [(STEPS, pytest.approx(final["test_nll"], rel=1e-6))]
    assert not [tag for tag in scalars if "nll" in tag and tag != "test/nll_k8"], sorted(scalars)


def test_eval_adds_its_nll_with_its_own_k_and_another_backend_adds_its_name(run):
    pytest.importorskip("vaebench_torch", reason="the other backend here is torch")
    for extra in (["--k", "4"], ["--k", "4", "--backend", "numpy"], ["--k", "4", "--backend", "torch"]):
        proc = _cli("eval", run, "-q", *extra)
        assert proc.returncode == 0, proc.stderr
    evaluations = json.loads((run / "metrics.json").read_text())["evaluations"]
    scalars = _scalars(run)
    assert scalars["test/nll_k8"][0][0] == STEPS  # the run's own, at k=8, still apart from the k=4 ones
    # the run's own backend, scored twice at k=4: two points at the weights' step, the last one is metrics.json's
    assert [s for s, _ in scalars["test/nll_k4"]] == [STEPS, STEPS]
    assert scalars["test/nll_k4"][-1][1] == pytest.approx(evaluations["numpy"]["test_nll"], rel=1e-6)
    assert scalars["test/nll_k4/torch"] == [(STEPS, pytest.approx(evaluations["torch"]["test_nll"], rel=1e-6))]


def test_no_nll_and_no_tensorboard_folder_log_nothing(tiny_dir, tmp_path):
    quiet = tmp_path / "no-tb"
    assert _cli(*QUICK, "--no-tensorboard", "--data-dir", tiny_dir, "--out", quiet).returncode == 0
    proc = _cli("eval", quiet, "-q", "--k", "4")
    assert proc.returncode == 0, proc.stderr
    assert not (quiet / "tb").exists()  # eval does not start a TensorBoard log the run never had
    no_nll = tmp_path / "k0"
    assert _cli(*QUICK, "--eval-k", "0", "--data-dir", tiny_dir, "--out", no_nll).returncode == 0
    assert not [tag for tag in _scalars(no_nll) if "nll" in tag]
