"""`vaebench sweep` over objectives (issue #28) and the leftovers of issue #26, at the plan: no Ray starts here.

- ``--objective``, ``--beta``, ``--iw-samples`` are axes; ``--beta`` applies to the
  beta-vae runs only and ``--iw-samples`` to the iwae runs only, and an axis for
  an objective the sweep does not train is refused in one line.
- Each objective, beta and K is a comparison group of its own in ``compare``.
- The closing summary warns, in one line, when the runs are not comparable.
- ``--device cuda`` on this machine's own Ray without a GPU is refused before Ray.
- ``-o BACKEND:KEY=VALUE`` reaches that backend's runs only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.errors import ConfigError
from vaebench.io.fileio import atomic_write_json
from vaebench.report.inputs import load_inputs
from vaebench.report.tables import seed_groups
from vaebench.sweep import launch, plan, preflight


def _cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "vaebench.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _one_line_exit_2(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def _grid(**axes) -> plan.Grid:
    return plan.make_grid({"backends": ["numpy"], "models": ["mlp"], "seeds": [0, 1, 2], "epochs": [5], **axes})


def _groups(tmp_path: Path, grid: plan.Grid, data: dict[str, str] | None = None) -> tuple[dict, Path]:
    """The grid's runs as a finished sweep (each run's metrics.json as training writes its config), and compare's cells."""
    record = plan.new_record(grid, grid.expand(), {"storage": "object-store", "exclusive": False})
    for i, entry in enumerate(record["runs"]):
        entry.update(status="completed", folder=f"{plan.RUNS}/{entry['name']}")
        sha = (data or {}).get(entry["name"], "aaa")
        metrics = {
            "schema_version": 1,
            "status": "completed",
            "config": entry["config"],
            "data": {"sha256": {"train": sha}},
            "history": [{"epoch": 1, "test_neg_elbo": 100.0 + i, "epoch_seconds": 1.0, "train_images_per_second": 10.0}],
            "final": {"test_neg_elbo": 100.0 + i, "active_units": 3},
        }
        atomic_write_json(tmp_path / entry["folder"] / "metrics.json", metrics)
    atomic_write_json(tmp_path / plan.SWEEP_FILE, record)
    _bench, runs = load_inputs([tmp_path])
    return seed_groups(runs), tmp_path


# -- the objective axes ------------------------------------------------------------------------------------------------


def test_beta_is_an_axis_of_the_beta_vae_runs_and_each_beta_is_a_group_of_its_own(tmp_path):
    grid = _grid(objective=["beta-vae"], beta=[1.0, 2.0, 4.0])
    runs = grid.expand()
    assert [r.name for r in runs[:4]] == [
        "numpy-mlp-bs128-lr0.001-ep5-beta1-seed0",
        "numpy-mlp-bs128-lr0.001-ep5-beta1-seed1",
        "numpy-mlp-bs128-lr0.001-ep5-beta1-seed2",
        "numpy-mlp-bs128-lr0.001-ep5-beta2-seed0",
    ]
    assert [(r.config.objective, r.config.beta, r.config.seed) for r in runs][-1] == ("beta-vae", 4.0, 2)
    assert len(runs) == 9
    cells, _ = _groups(tmp_path, grid)
    assert len(cells) == 3, list(cells)  # one group per beta, three seeds in each
    assert sorted(len(cell["numpy"]) for cell in cells.values()) == [3, 3, 3]
    assert {m["config"]["beta"] for cell in cells.values() for m in cell["numpy"]} == {1.0, 2.0, 4.0}
    assert all(len({m["config"]["beta"] for m in cell["numpy"]}) == 1 for cell in cells.values())


def test_iw_samples_applies_to_the_iwae_runs_only_so_vae_and_iwae_are_two_groups(tmp_path):
    grid = _grid(objective=["vae", "iwae"], iw_samples=[5])
    runs = grid.expand()
    assert len(runs) == 6  # three vae seeds and three iwae ones: K multiplies only the iwae runs
    assert {(r.config.objective, r.config.iw_samples) for r in runs} == {("vae", 1), ("iwae", 5)}
    assert runs[0].name == "numpy-mlp-bs128-lr0.001-ep5-seed0"  # a vae run is named as before objectives were axes
    assert runs[3].name == "numpy-mlp-bs128-lr0.001-ep5-iwae5-seed0"
    cells, _ = _groups(tmp_path, grid)
    assert len(cells) == 2 and all(len(cell["numpy"]) == 3 for cell in cells.values()), list(cells)
    assert plan.new_record(grid, runs, {})["grid"]["iw_samples"] == [5]


def test_every_k_is_a_group_and_beta_vae_at_beta_1_is_the_vae_run_not_a_second_one():
    runs = _grid(objective=["vae", "beta-vae", "iwae"], beta=[1.0, 3.0], iw_samples=[2, 5]).expand()
    names = {r.name.rsplit("-seed", 1)[0].rsplit("-", 1)[-1] for r in runs}
    assert names == {"ep5", "beta3", "iwae2", "iwae5"}, names  # beta-vae at beta 1 trains the VAE's objective
    assert len(runs) == 4 * 3


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--beta", "2,4"], ["--beta 2,4 applies to --objective beta-vae only", "(--objective vae)"]),
        (["--objective", "vae,beta-vae", "--iw-samples", "5"], ["--iw-samples 5 applies to --objective iwae only"]),
        (["--objective", "iwae", "--beta", "2"], ["--beta 2 applies to --objective beta-vae only"]),
        (["--objective", "vea"], ["--objective 'vea'", "vae, beta-vae, iwae"]),
    ],
    ids=["beta-without-beta-vae", "k-without-iwae", "beta-with-iwae", "unknown"],
)
def test_an_axis_that_would_vary_nothing_is_one_line_exit_2(args, needles):
    _one_line_exit_2(_cli("sweep", "--backends", "numpy", "--models", "mlp", *args, "--dry-run"), *needles)


def test_the_objective_axes_come_from_toml_with_the_flags_keys(tmp_path):
    toml = tmp_path / "sweep.toml"
    toml.write_text('backends = ["numpy"]\nmodels = ["mlp"]\nobjective = ["vae", "iwae"]\niw-samples = [2, 5]\nepochs = 1\n')
    result = CliRunner().invoke(cli, ["sweep", str(toml), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()[:-1]] == [
        "numpy-mlp-bs128-lr0.001-ep1-seed0",
        "numpy-mlp-bs128-lr0.001-ep1-iwae2-seed0",
        "numpy-mlp-bs128-lr0.001-ep1-iwae5-seed0",
    ]
    flags = plan.merge_settings(toml, {"iw_samples": [7]})  # the flags override the file's
    assert [r.name for r in plan.make_grid(flags).expand()] == [
        "numpy-mlp-bs128-lr0.001-ep1-seed0",
        "numpy-mlp-bs128-lr0.001-ep1-iwae7-seed0",
    ]
    flags = plan.merge_settings(toml, {"objective": ["beta-vae"], "beta": [0.5]})  # the file's K now applies to nothing
    with pytest.raises(ConfigError, match="--iw-samples 2,5 applies to --objective iwae only"):
        plan.make_grid(flags).expand()
    toml.write_text('backends = ["numpy"]\nmodels = ["mlp"]\nobjective = "iwae"\niw_samples = "many"\n')
    with pytest.raises(ConfigError, match="'many' is not int"):
        plan.read_toml(toml)


# -- the closing summary: one line when the runs are not comparable ------------------------------------------------


def _summary(record_dir: Path) -> tuple[list[str], list[str]]:
    said, warned = [], []
    launch.finish(plan.read_record(record_dir), record_dir, echo=said.append, warn=warned.append)
    return said, warned


def test_the_summary_of_comparable_groups_warns_of_nothing(tmp_path):
    _groups(tmp_path, _grid(objective=["vae", "iwae"], iw_samples=[5]))
    said, warned = _summary(tmp_path)
    assert said == [f"6 of 6 runs completed in {tmp_path}/; compare: vaebench compare {tmp_path}"] and warned == []


def test_the_summary_warns_when_one_groups_runs_were_trained_on_other_data(tmp_path):
    grid = _grid()
    _groups(tmp_path, grid, data={grid.expand()[2].name: "bbb"})
    _said, warned = _summary(tmp_path)
    assert len(warned) == 1 and "\n" not in warned[0], warned
    assert warned[0].startswith("warning: not comparable: runs of one group differ in data"), warned


def test_the_summary_warns_when_groups_differ_in_what_the_sweep_does_not_vary(tmp_path):
    # mlp and blog without --epochs or --batch-sizes: each model's own 10 and 100 epochs, batches of 128 and 512
    grid = plan.make_grid({"backends": ["numpy"], "models": ["mlp", "blog"], "seeds": [0]})
    _groups(tmp_path, grid)
    _said, warned = _summary(tmp_path)
    assert len(warned) == 1, warned
    assert "groups differ in batch_size 128 vs 512; epochs 10 vs 100, which the sweep does not vary" in warned[0], warned
    # the same models at epochs and batch sizes the sweep names: what differs is the model, which it varies
    grid = plan.make_grid({"backends": ["numpy"], "models": ["mlp", "blog"], "epochs": [1], "batch_sizes": [64]})
    _groups(tmp_path / "named", grid)
    assert _summary(tmp_path / "named")[1] == []


# -- --device cuda on this machine's own Ray, refused before Ray ---------------------------------------------------


def test_device_cuda_without_a_gpu_here_is_refused_before_ray_is_even_imported(tmp_path):
    code = "import sys; sys.modules['ray'] = None; from vaebench.cli import main; main()"
    out = tmp_path / "sw"
    proc = _cli("sweep", "--backends", "numpy", "--models", "mlp", "--device", "cuda", "--out", str(out), code=code)
    _one_line_exit_2(proc, "asks for --device cuda, but numpy sees no GPU", "--device cpu", "no run was started")
    assert "needs Ray" not in proc.stderr and not out.exists()  # the numpy reference runs on the CPU on any machine


def test_the_gpu_check_asks_each_cuda_backend_once_and_only_without_an_address():
    runs = plan.make_grid({"backends": ["numpy", "other"], "models": ["mlp"], "seeds": [0, 1], "device": "cuda"}).expand()
    asked: list[str] = []

    def ask(name: str) -> str:
        asked.append(name)
        return "device     cuda: NVIDIA H200" if name == "numpy" else "device     cpu: AMD EPYC"

    with pytest.raises(
        ConfigError, match=r"run other-mlp-\S+ asks for --device cuda, but other sees no GPU on this machine .device cpu"
    ):
        preflight.check_gpus(runs, ask)
    assert asked == ["numpy", "other"]
    asked.clear()
    preflight.check_gpus(runs[:2], ask)  # numpy sees one: nothing to refuse
    cpu = plan.make_grid({"backends": ["other"], "models": ["mlp"], "device": "cpu"}).expand()
    preflight.check_gpus(cpu, ask)
    assert asked == ["numpy"]
    numpy = [r for r in runs if r.config.backend == "numpy"]
    with pytest.raises(ConfigError, match="numpy sees no GPU"):  # its real answer: the reference runs on the CPU
        preflight.check_runs(numpy, {})
    preflight.check_runs(numpy, {"address": "head:6379"})  # a cluster's GPUs are checked once it is joined


# -- -o BACKEND:KEY=VALUE: each run gets its own backend's settings ------------------------------------------------


def test_a_routed_option_reaches_its_backends_runs_only():
    grid = plan.make_grid(
        {"backends": ["torch", "jax"], "models": ["conv"], "options": {"torch:transpose": "subpixel", "jax:transpose": "lax"}}
    )
    assert {r.config.backend: r.config.options for r in grid.expand()} == {
        "torch": {"transpose": "subpixel"},
        "jax": {"transpose": "lax"},
    }
    per = plan.route_options({"layout": "nchw", "torch:layout": "nhwc", "jax:x": "1"}, ["torch", "jax"])
    assert per == {"torch": {"layout": "nhwc"}, "jax": {"layout": "nchw", "x": "1"}}  # its own setting wins


@pytest.mark.parametrize(
    "option, needles",
    [
        ("keras:layout=nchw", ["-o keras:layout=nchw names backend 'keras'", "--backends numpy"]),
        ("numpy:nosuch=1", ["run numpy-mlp-", "has no option 'nosuch'", "no run was started"]),
    ],
    ids=["backend-not-in-the-sweep", "key-the-backend-lacks"],
)
def test_a_routed_option_for_no_backend_or_no_key_is_one_line_exit_2(option, needles):
    _one_line_exit_2(_cli("sweep", "--backends", "numpy", "--models", "mlp", "-o", option, "--dry-run"), *needles)


def test_the_dry_run_shows_each_runs_own_options():
    pytest.importorskip("vaebench_torch")  # the classes only: no framework is imported
    pytest.importorskip("vaebench_jax")
    args = ["sweep", "--backends", "torch,jax", "--models", "conv", "-o", "torch:layout=nchw", "--dry-run"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "torch-conv-bs128-lr0.001-ep30-seed0  (1 CPU)  -o layout=nchw", lines
    assert lines[1] == "jax-conv-bs128-lr0.001-ep30-seed0  (1 CPU)", lines
