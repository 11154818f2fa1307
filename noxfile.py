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
MAX_SURVIVING = 0.10
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


@nox.session(python="3.11", default=False)
def mutation(session: nox.Session) -> None:
    """Mutation testing of the measurement code ([tool.mutmut] in pyproject.toml: stats, timing windows,
    the interleaving coordinator, the parity verdict). Fails when more than 10% of mutants survive."""
    import json
    import shutil

    session.install(MUTMUT)
    install_core(session)
    shutil.rmtree("mutants", ignore_errors=True)
    session.run("mutmut", "run", env=DATA_ENV)
    session.run("mutmut", "export-cicd-stats")
    with open("mutants/mutmut-cicd-stats.json") as f:
        stats = json.load(f)
    survived = stats["survived"] + stats["no_tests"] + stats["timeout"] + stats["suspicious"]
    share = survived / max(stats["total"], 1)
    session.log(f"{stats['killed']} killed, {survived} survived of {stats['total']} mutants ({share:.1%})")
    if share > MAX_SURVIVING:
        session.run("mutmut", "results")
        session.error(f"{share:.1%} of mutants survive (at most {MAX_SURVIVING:.0%}); see `mutmut results` and `mutmut show`")
