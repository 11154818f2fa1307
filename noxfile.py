"""nox sessions: lint, the framework-free core, and one test session per backend.

Each backend session installs only the core and that plugin (with its pinned
framework), so a plugin's tests prove it needs nothing else. The core session
installs no framework at all, proving the core imports none.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "core", "tests", "keras_engines"]
nox.options.reuse_existing_virtualenvs = True

# What each plugin needs beyond its own package: the pinned framework wheels.
FRAMEWORK_PINS = {
    "torch": ["torch==2.13.0"],
    "jax": ["jax==0.10.2", "jaxlib==0.10.2", "flax==0.12.8", "optax==0.2.8"],
    "keras": ["keras==3.15.1", "tensorflow-cpu==2.21.0"],
}
KERAS_ENGINES = {"keras-jax": FRAMEWORK_PINS["jax"], "keras-torch": FRAMEWORK_PINS["torch"]}
MUTMUT = "mutmut==3.8.1"  # pinned: mutant numbering and the stats format change between releases
MAX_SURVIVING = 0.10  # per module: at least 90% of its counted mutants killed
DATA_ENV = {"VAEBENCH_DATA_DIR": os.environ.get("VAEBENCH_DATA_DIR", os.path.abspath("../shared/data/mnist"))}


def install_core(session: nox.Session) -> None:
    """The core with its test extras, editable."""
    session.install("-e", ".[test]")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import-linter contracts that keep the layers from eroding."""
    session.install("ruff", "import-linter==2.17")
    session.install("--no-deps", "-e", ".", "-e", "backends/torch", "-e", "backends/jax", "-e", "backends/keras")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")  # the layers contract and the forbidden ones in pyproject.toml


@nox.session(python="3.11")
def core(session: nox.Session) -> None:
    """Core tests with no deep-learning framework installed (backend tests skip)."""
    install_core(session)
    session.run(
        "python",
        "-c",
        "import importlib.util as u, sys; bad=[m for m in ('torch','jax','tensorflow','keras') if u.find_spec(m)];"
        "sys.exit(f'framework installed in the core session: {bad}' if bad else 0)",
    )
    session.run("pytest", "tests", *session.posargs, env=DATA_ENV)


@nox.session(python="3.11")
@nox.parametrize("backend", [nox.param(name, tags=[name]) for name in FRAMEWORK_PINS])
def tests(session: nox.Session, backend: str) -> None:
    """The core's tests and one plugin's tests, with only that plugin installed."""
    session.install(*FRAMEWORK_PINS[backend])
    install_core(session)
    session.install("-e", f"backends/{backend}")
    session.run("pytest", "tests", f"backends/{backend}", *session.posargs, env=DATA_ENV)


@nox.session(python="3.11", tags=["keras"])
@nox.parametrize("engine", [nox.param(name, tags=[name]) for name in KERAS_ENGINES])
def keras_engines(session: nox.Session, engine: str) -> None:
    """The keras plugin's conformance kit on its JAX or PyTorch engine, in a process of its own."""
    session.install(*FRAMEWORK_PINS["keras"], *KERAS_ENGINES[engine])
    install_core(session)
    session.install("-e", "backends/keras")
    env = {**DATA_ENV, "VAEBENCH_KERAS_ENGINE": engine}
    session.run("pytest", "backends/keras", *session.posargs, env=env)


@nox.session(python="3.11", default=False)
@nox.parametrize("backend", [nox.param(name, tags=[name, "bench"]) for name in FRAMEWORK_PINS])
def bench(session: nox.Session, backend: str) -> None:
    """pytest-benchmark timings of one plugin (slow; not in the default sessions). posargs go to pytest,
    e.g. ``nox -s "bench(backend='jax')" -- --benchmark-autosave``."""
    session.install(*FRAMEWORK_PINS[backend])
    install_core(session)
    session.install("-e", f"backends/{backend}")
    session.run("pytest", "tests/benchmarks", "-m", "bench", *session.posargs)


# `nox -s gpu`: everything a CUDA machine can tell us that this CPU-only one cannot, in one folder to bring back.
GPU_OUT = "gpu-results"
GPU_REFUSAL = "nox -s gpu needs an NVIDIA GPU with CUDA; none found here"
# The CUDA builds: torch's default Linux wheel on PyPI is its CUDA build; jax and TensorFlow name theirs as extras
# (the plugins' own [cuda] and [gpu] extras, pinned here as FRAMEWORK_PINS pins the CPU builds).
GPU_PINS = [
    "torch==2.13.0",
    "jax[cuda12]==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "keras==3.15.1",
    "tensorflow[and-cuda]==2.21.0",
]
GPU_KITS = {"torch": "backends/torch", "jax": "backends/jax", "keras": "backends/keras"}
GPU_KITS.update({e: "backends/keras" for e in KERAS_ENGINES})  # the keras kit again on JAX and on PyTorch


def cuda_available() -> bool:
    """Whether this machine has a CUDA GPU: ``nvidia-smi`` runs and exits 0, or a torch in this interpreter sees one.

    Asked before anything is installed, with nothing but the standard library (and a torch only if one is
    already there), so a machine without CUDA is told so in seconds, not after gigabytes of CUDA wheels.
    """
    import importlib.util
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            if subprocess.run([smi], capture_output=True, timeout=60).returncode == 0:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


@nox.session(python="3.11", default=False)
def gpu(session: nox.Session) -> None:
    """On CUDA: the conformance kit (torch, jax, keras on TensorFlow, JAX and PyTorch), parity against the float64
    reference, a small bench matrix and ``explain``, all with ``--device cuda``; every file and log in gpu-results/.

    Refuses in one line, non-zero, where there is no CUDA GPU, so it can never pass without having run. Every step
    runs even if one before it failed (a GPU hour is dear); the session fails at the end, naming the failed steps.
    """
    if not cuda_available():
        session.error(GPU_REFUSAL)
    import pathlib
    import shutil

    from nox.command import CommandFailed

    out = pathlib.Path(GPU_OUT)
    shutil.rmtree(out, ignore_errors=True)  # the folder holds one run's evidence, never a mix of two
    out.mkdir()
    session.install(*GPU_PINS)
    session.install("-e", ".[test]", "-e", "backends/torch", "-e", "backends/jax[cuda]", "-e", "backends/keras[gpu]")
    failed: list[str] = []

    def step(name: str, *args: str, env: dict[str, str] | None = None, external: bool = False) -> None:
        with open(out / f"{name}.log", "w") as log:  # stdout and stderr both (nox's default stderr is stdout)
            try:
                session.run(*args, env={**DATA_ENV, **(env or {})}, stdout=log, external=external)
            except CommandFailed:
                failed.append(name)
        session.log(f"{name}: {'FAILED' if name in failed else 'ok'} (log: {out / name}.log)")

    step("nvidia-smi", "nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv", external=True)
    step("backends", "vaebench", "backends", "--devices")
    for name, tests in GPU_KITS.items():  # the kit's GPU tests run where a GPU is: -rs lists any that skipped
        engine = {"VAEBENCH_KERAS_ENGINE": name} if name.startswith("keras") else {}
        step(f"kit-{name}", "pytest", tests, "-q", "-rs", f"--junitxml={out / f'kit-{name}.xml'}", env=engine)
    backends = "torch,jax,keras,keras-jax,keras-torch"
    step("parity", "vaebench", "parity", "--model", "conv", "--backends", f"numpy,{backends}", "--device", "cuda")
    step(
        "bench",
        *("vaebench", "bench", "--device", "cuda", "--backends", backends, "--models", "mlp,conv"),
        *("--batch-sizes", "128,512", "--repeats", "5", "--allow-busy", "--out", str(out / "bench")),
    )
    step(
        "explain",
        *("vaebench", "explain", "--device", "cuda", "--backends", backends, "--model", "conv", "--rounds", "3"),
        *("--out", str(out / "explain")),
    )
    if failed:
        session.error(f"failed on CUDA: {', '.join(failed)}; see {out}/<step>.log")
    session.log(f"all steps passed; bring back {out}/")


# What `nox -s mutation` gates, per source file ([tool.mutmut] source_paths in pyproject.toml): the functions whose
# mutants count, as mutmut mangles them (``x_name`` for a function, ``xǁClassǁname`` for a method; "*": all).
MUTATION_SCOPE: dict[str, tuple[str, ...]] = {
    "vaebench/measure/stats.py": ("*",),
    "vaebench/measure/timing.py": ("*",),
    "vaebench/measure/interleave.py": ("*",),
    "vaebench/measure/paritycheck.py": ("*",),
    # the windows and the throughput: the process plumbing (WorkerProcess, main, serve's error replies) is not a figure
    "vaebench/measure/worker.py": (
        "x_staged_feed",
        "x__timed",
        "xǁCellǁcompile",
        "xǁCellǁwindow",
        "xǁCellǁtune",
        "xǁCellǁinference",
    ),
    # the clock, the summary and which variant each entry trained (and says it trained) under a profile;
    # _in_subprocess and main only carry a request and its reply across a process
    "vaebench/measure/ttq.py": ("x_time_to_quality", "x_run_ttq", "x_ttq_batch_size", "x_picked_variants", "x_run_ttq_grid"),
    "vaebench/run/evaluation.py": ("*",),
    "vaebench/model/costs.py": ("*",),
    # the arithmetic and the timing loop; the framework GEMMs (_numpy, _torch, _jax) are what gets timed
    "vaebench/measure/peak.py": (
        "x_gemm_gflops",
        "x__best_time",
        "x_measure_peak",
        "x_achieved_gflops",
        "x_fraction_of_peak",
    ),
    # explain's arithmetic and timing loop; serve/_in_subprocess/main/explain carry requests and documents
    "vaebench/measure/explain.py": (
        "x_time_probes",
        "x__summary",
        "x_difference",
        "x_layer_phases",
        "x_step_split",
        "x_measure_backend",
        "x_flag_slow",
    ),
    "vaebench/measure/fit.py": ("*",),
    "vaebench/model/subpixel.py": ("*",),
    # the -ELBO, beta-VAE and IWAE objectives every backend trains on and the NumPy reference's ops
    "vaebench/model/loss.py": ("*",),
    # the learning rate of every epoch (--lr-schedule)
    "vaebench/model/schedule.py": ("*",),
    # the cost of exactness: the pair's ratio, its cost in step time and how the pair is timed; not the files or the CLI
    "vaebench/measure/exactness.py": ("x_twin_of", "x_exactness_row", "x_measure"),
    # what --profile best may try and what it keeps
    "vaebench/plugin/profiles.py": ("x_levers_for", "x_choose", "x_variants"),
}
# Survivors judged equivalent (no test can tell them from the original): mutant name -> why. Excluded from the count.
# The names are mutmut's numbering of each function as it stands: a change to a function renumbers its mutants, and
# the session names every entry it no longer finds surviving, to be judged again.
EQUIVALENT: dict[str, str] = {
    "vaebench.plugin.profiles.x_variants__mutmut_29": "zip strict=None: a product's combinations have one value per tunable",
    "vaebench.plugin.profiles.x_variants__mutmut_32": "zip without strict: a product's combinations have one value per tunable",
    "vaebench.plugin.profiles.x_variants__mutmut_33": "zip strict=False: a product's combinations have one value per tunable",
    "vaebench.plugin.profiles.x_variants__mutmut_37": "pop default None: only '1' turns compile on; None != '1' as '0' does",
    "vaebench.plugin.profiles.x_variants__mutmut_42": "pop default 'XX0XX': only '1' turns compile on",
    "vaebench.measure.exactness.x_twin_of__mutmut_4": "the join's separator: the catalogue has one twin, so nothing is joined",
    "vaebench.measure.fit.x_fit_step_time__mutmut_20": "asarray(batches) without float: 1/ts and bs/ts promote to float64 anyway",
    "vaebench.measure.fit.x_fit_step_time__mutmut_22": "asarray(batches) without float: 1/ts and bs/ts promote to float64 anyway",
    "vaebench.measure.fit.x_fit_step_time__mutmut_24": "asarray(seconds, None): step times are Python floats, float64 anyway",
    "vaebench.measure.fit.x_fit_step_time__mutmut_26": "asarray(seconds) without float: Python floats, float64 anyway",
    "vaebench.measure.fit.x_fit_step_time__mutmut_41": "lstsq without rcond=None: None is NumPy 2's default",
    "vaebench.measure.fit.x_fit_step_time__mutmut_71": "b >= 0 differs only at b == 0.0 exactly, never a fit of measured times",
    "vaebench.measure.fit.x_fit_step_time__mutmut_81": "zip strict=None: the lengths were checked equal at the top",
    "vaebench.measure.fit.x_fit_step_time__mutmut_84": "zip without strict: the lengths were checked equal at the top",
    "vaebench.measure.fit.x_fit_step_time__mutmut_85": "zip strict=False: the lengths were checked equal at the top",
    "vaebench.measure.explain.x__summary__mutmut_10": "quantiles without n=4: 4 is the default",
    "vaebench.measure.explain.x__summary__mutmut_18": "one round: [m] * 4 instead of * 3, and only q[0] and q[2] are read",
    "vaebench.measure.explain.x_difference__mutmut_8": "zip strict=None: the lengths were checked equal just above",
    "vaebench.measure.explain.x_difference__mutmut_11": "zip without strict: the lengths were checked equal just above",
    "vaebench.measure.explain.x_difference__mutmut_12": "zip strict=False: the lengths were checked equal just above",
    "vaebench.measure.explain.x_step_split__mutmut_83": "remainder >= 0: at 0 the share is 0, within tolerance: no note",
    "vaebench.measure.explain.x_measure_backend__mutmut_3": "another seed: other input values; no figure depends on them",
    "vaebench.measure.explain.x_measure_backend__mutmut_37": "grad_input_flops is 0 or >= 2 MACs: > 1 and > 0 agree",
    "vaebench.measure.explain.x_measure_backend__mutmut_91": "synthetic_batches' latent_dim only makes the default noise "
    "shape, and the objective's noise shape is given",
    "vaebench.measure.explain.x_measure_backend__mutmut_107": "another synthetic batch: same shapes, the same speed",
    "vaebench.model.subpixel.xǁSubPixelǁkernel_index__mutmut_2": "asarray of Python ints is int64 without the dtype",
    "vaebench.model.subpixel.xǁSubPixelǁkernel_index__mutmut_4": "asarray of Python ints is int64 without the dtype",
    "vaebench.model.subpixel.x_subpixel__mutmut_8": "in_shape[1] for [0]: every layer's input is square",
    "vaebench.model.subpixel.x_subpixel__mutmut_9": "out_shape[1] for [0]: every layer's output is square",
    "vaebench.model.subpixel.x_subpixel_kernel__mutmut_8": "a second zero tap: the gather never reads past tap k",
    "vaebench.model.subpixel.x_subpixel_kernel__mutmut_10": "a second zero tap: the gather never reads past tap k",
    "vaebench.measure.stats.x_summarize__mutmut_15": "quantiles(n=4) without n=4: 4 is the default",
    "vaebench.measure.stats.x_summarize__mutmut_24": "one value: [v] * 4 instead of * 3, and only q[0] and q[2] are read",
    "vaebench.measure.stats.x_ratio_interval__mutmut_15": "zip strict=None: the lengths were checked equal just above",
    "vaebench.measure.stats.x_ratio_interval__mutmut_18": "zip without strict: the lengths were checked equal just above",
    "vaebench.measure.stats.x_ratio_interval__mutmut_19": "zip strict=False: the lengths were checked equal just above",
    "vaebench.measure.stats.x_ratio_interval__mutmut_31": "gen.integers(n) is gen.integers(0, n): the same draws",
    "vaebench.measure.stats.x_equivalence__mutmut_103": "p_tost <= alpha: p exactly alpha never occurs (continuous t; "
    "the zero-spread branch gives 0 or 1)",
    "vaebench.measure.stats.x_equivalence__mutmut_108": "low >= 0: the interval's end exactly at 0 never occurs (with "
    "zero spread, diff 0 is within the margin and decided equivalent first)",
    "vaebench.measure.stats.x_equivalence__mutmut_110": "high <= 0: as low >= 0, mirrored",
    "vaebench.measure.paritycheck.x_compare__mutmut_14": "astype(None) is astype(float64) in NumPy",
    "vaebench.measure.paritycheck.x_compare__mutmut_22": "astype(None) is astype(float64) in NumPy",
    "vaebench.measure.paritycheck.x_compare__mutmut_44": "astype(None) is astype(float64) in NumPy",
    "vaebench.run.evaluation.x_evaluate_split__mutmut_28": "zip strict=None: TERMS has three names for the three totals",
    "vaebench.run.evaluation.x_evaluate_split__mutmut_31": "zip without strict: TERMS has three names for the three totals",
    "vaebench.run.evaluation.x_evaluate_split__mutmut_32": "zip strict=False: TERMS has three names for the three totals",
    "vaebench.run.evaluation.x_code_statistics__mutmut_4": "float counts: code_usage casts them to int64",
    "vaebench.run.evaluation.x_code_statistics__mutmut_6": "float counts: code_usage casts them to int64",
    "vaebench.run.evaluation.x_latent_statistics__mutmut_14": "astype(None) is astype(float64) in NumPy",
    "vaebench.run.evaluation.x_latent_statistics__mutmut_16": "astype(None) is astype(float64) in NumPy",
    "vaebench.run.evaluation.x_iwae_nll__mutmut_23": "k < rows for k <= rows: at k == rows both forms call with k rows",
    "vaebench.run.evaluation.x_iwae_nll__mutmut_54": "astype(None) is astype(float64) in NumPy",
    "vaebench.run.evaluation.x_iwae_nll__mutmut_99": "reshape(-2, d): NumPy infers any negative size",
    "vaebench.run.evaluation.x_full_evaluation__mutmut_32": "evaluate_split's seed only draws noise, and a VQ model "
    "draws none (noise_dim 0)",
    "vaebench.model.loss.x_iwae_bound__mutmut_41": "logits.shape[+1]: flattened logits are (B * K, pixels), [1] is [-1]",
    "vaebench.model.loss.xǁNumpyOpsǁflatten__mutmut_7": "reshape(n, -2): NumPy infers any negative size; NumpyOps holds "
    "only NumPy arrays (the IWAE bound's own reshapes are held to -1 by tests/test_loss_reference.py)",
}
KILLED = {"killed", "timeout", "caught by type check"}  # a timeout is a test that never finishes: caught
UNCOUNTED = {"not checked", "skipped"}  # outside the scope of this run


def _module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def mutation_gate(results: str, paths: list[str]) -> dict[str, dict[str, list[str]]]:
    """``mutmut results --all true`` sorted per source file in ``paths``: killed and surviving mutant names.

    A mutant counts when its function is in :data:`MUTATION_SCOPE` and it is not in :data:`EQUIVALENT`.
    """
    import fnmatch
    import re

    per_file: dict[str, dict[str, list[str]]] = {p: {"killed": [], "survived": [], "equivalent": [], "stale": []} for p in paths}
    for line in results.splitlines():
        m = re.match(r"^\s*(\S+__mutmut_\d+): (.+)$", line)
        if not m:
            continue
        name, status = m.group(1), m.group(2).strip()
        for path in paths:
            prefix = _module(path) + "."
            function = name[len(prefix) :].rsplit("__mutmut_", 1)[0]
            if not name.startswith(prefix) or not any(fnmatch.fnmatchcase(function, f) for f in MUTATION_SCOPE[path]):
                continue
            if status in UNCOUNTED:
                pass
            elif name in EQUIVALENT:
                per_file[path]["equivalent" if status not in KILLED else "stale"].append(name)
            else:
                per_file[path]["killed" if status in KILLED else "survived"].append(f"{name}: {status}")
    return per_file


@nox.session(python="3.11", default=False)
def mutation(session: nox.Session) -> None:
    """Mutation testing of every module that computes a figure users read ([tool.mutmut] in pyproject.toml, the
    scope above). Fails when fewer than 90% of a module's counted mutants are killed, module by module.

    posargs: source files to restrict the run to (``nox -s mutation -- vaebench/measure/stats.py``);
    ``$MUTMUT_MAX_CHILDREN`` caps the parallel workers.
    """
    import shutil
    import tomllib

    with open("pyproject.toml", "rb") as f:
        mutated = set(tomllib.load(f)["tool"]["mutmut"]["source_paths"])
    if mutated != set(MUTATION_SCOPE):
        session.error(f"[tool.mutmut] source_paths and MUTATION_SCOPE differ: {sorted(mutated ^ set(MUTATION_SCOPE))}")
    unknown = [p for p in session.posargs if p not in MUTATION_SCOPE]
    if unknown:
        session.error(f"not in the mutation scope: {', '.join(unknown)}; one of {', '.join(MUTATION_SCOPE)}")
    paths = list(session.posargs) or list(MUTATION_SCOPE)
    session.install(MUTMUT)
    install_core(session)
    shutil.rmtree("mutants", ignore_errors=True)
    # ``module.function*`` matches both the function (mutmut's test selection) and its mutants (``…__mutmut_N``)
    patterns = [f"{_module(p)}.{f}*" for p in paths for f in MUTATION_SCOPE[p]]
    children = ["--max-children", os.environ["MUTMUT_MAX_CHILDREN"]] if os.environ.get("MUTMUT_MAX_CHILDREN") else []
    session.run("mutmut", "run", *children, *patterns, env=DATA_ENV)
    results = session.run("mutmut", "results", "--all", "true", silent=True, env=DATA_ENV)
    failing = []
    for path, got in mutation_gate(results or "", paths).items():
        counted = len(got["killed"]) + len(got["survived"])
        share = len(got["killed"]) / counted if counted else 0.0
        session.log(f"{path}: {len(got['killed'])} of {counted} killed ({share:.1%}), {len(got['equivalent'])} equivalent")
        for s in got["survived"]:
            session.log(f"    survived {s}")
        for name in got["stale"]:
            session.warn(f"    EQUIVALENT lists {name}, which a test now kills: drop it or re-judge it")
        if share < 1 - MAX_SURVIVING:
            failing.append(f"{path} ({share:.1%})")
    if failing:
        session.error(
            f"under {1 - MAX_SURVIVING:.0%} of mutants killed in {', '.join(failing)}: kill them with a test that pins "
            "the figure, or list them in EQUIVALENT with the reason; see `mutmut show <name>`"
        )
