"""What the core asks of each array library, by name: devices, threads, precision, GPU memory.

The torch, jax and keras plugins run on three engines (``torch``, ``jax``,
``tensorflow``), and the keras plugin runs on all three. Resolving ``--device``
with its error text, applying ``--threads`` and ``--precision``, and querying
the GPU allocator's peak used to be written in each plugin, the keras one
repeating the others. Each is written once here. The core still imports no
framework: each function imports the engine it is asked about, when a plugin
(which has imported it already) asks.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from vaebench.errors import BackendError
from vaebench.plugin.environment import Environment
from vaebench.plugin.host import cpu_model, set_xla_threads

ENGINES = ("torch", "jax", "tensorflow")
#: --precision in JAX's words (``jax_default_matmul_precision``)
JAX_MATMUL = {"fp32": "highest", "tf32": "high"}


def module(engine: str) -> Any:
    """The engine's top-level module (imported already by the plugin that asks)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; engines are {ENGINES}")
    return importlib.import_module(engine)


_engine = module

#: TensorFlow 2.21's native start-up notes: written before its logging is set up, so TF_CPP_MIN_LOG_LEVEL cannot stop them
NATIVE_CHATTER = ("absl::InitializeLog()", "port.cc:", "cpu_feature_guard.cc:", "To enable the following instructions:")


@contextlib.contextmanager
def native_chatter_held() -> Iterator[None]:
    """Hold back what native code writes to stderr meanwhile, then pass on every line but the start-up notes.

    Why here: the notes are an engine's (TensorFlow's C++ runtime), printed at its first import, and are not for
    our users; any plugin importing that engine, or a module that imports it, wraps the import in this.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if not any(c in line for c in NATIVE_CHATTER)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def start(engine: str, who: str, threads: int | None, install_hint: str) -> None:
    """Import ``engine`` for a plugin, after what must come first (:func:`prepare`), its start-up notes held back;
    an engine that is not installed is a :class:`BackendError` naming ``who`` asked and ``install_hint``."""
    if engine == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read once, at TensorFlow's first import
    prepare(engine, threads)
    try:
        with native_chatter_held():
            importlib.import_module(engine)
    except ImportError:
        raise BackendError(f"{who} needs {engine}, which is not installed; {install_hint}") from None


def prepare(engine: str, threads: int | None, xla_flags: Sequence[str] = ()) -> None:
    """What must happen before ``engine`` is first imported: XLA reads its flags once, at start-up.

    ``xla_flags`` (``--name=value``, jax only) are added to ``XLA_FLAGS``. Where the process's XLA has read its
    flags already (jax imported) and they do not say the same, that is an error, not a setting silently ignored:
    such an option needs a process of its own (every bench cell and parity entry has one).
    """
    if engine != "jax":
        return
    set_xla_threads(threads)
    current = os.environ.get("XLA_FLAGS", "").split()
    for flag in xla_flags:
        name = flag.partition("=")[0]
        given = [f for f in current if f.partition("=")[0] == name]
        if given and given[-1] != flag:
            raise BackendError(f"XLA_FLAGS sets {given[-1]}, which the option asking for {flag} would contradict")
        if given:
            continue
        if "jax" in sys.modules:  # XLA has (or will have) read XLA_FLAGS without this flag
            raise BackendError(f"{flag} must be in XLA_FLAGS before jax starts: run it in a process of its own")
        # before the first token without "--": XLA stops reading XLA_FLAGS there and would ignore the flag
        at = next((i for i, token in enumerate(current) if not token.startswith("--")), len(current))
        current.insert(at, flag)
    if xla_flags:
        os.environ["XLA_FLAGS"] = " ".join(current)


@functools.cache
def xla_flag_known(flag: str) -> bool:
    """Whether the installed jaxlib accepts ``flag`` in ``XLA_FLAGS``: asked of a fresh process, once per process.

    XLA aborts the whole process on a flag it does not know, and which flags exist changes between jaxlib
    releases, so a flag is offered only after a throwaway process started XLA on the CPU with it and exited 0.
    """
    # the flag alone: XLA stops reading XLA_FLAGS at its first token without "--" (the threads' one, for one), so a
    # flag after such a token would be ignored and any name would seem known
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    code = "import jax; jax.numpy.zeros(1).block_until_ready()"
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def configure(engine: str, threads: int | None, precision: str) -> None:
    """Apply ``--threads`` (``None``: the engine's default) and ``--precision`` (``fp32`` strict, ``tf32``)."""
    module, tf32 = _engine(engine), precision == "tf32"
    if engine == "torch":
        if threads:
            module.set_num_threads(threads)
        module.backends.cuda.matmul.allow_tf32 = module.backends.cudnn.allow_tf32 = tf32
    elif engine == "jax":
        module.config.update("jax_default_matmul_precision", JAX_MATMUL[precision])
    else:
        if threads:
            with contextlib.suppress(RuntimeError):  # the runtime is up already: keep its setting, reported as is
                module.config.threading.set_intra_op_parallelism_threads(threads)
        module.config.experimental.enable_tensor_float_32_execution(tf32)


def gpu_available(engine: str) -> bool:
    """Whether ``engine`` sees a GPU it can use."""
    module = _engine(engine)
    if engine == "torch":
        return bool(module.cuda.is_available())
    if engine == "jax":
        try:
            return bool(module.devices("gpu"))
        except RuntimeError:
            return False
    return bool(module.config.list_physical_devices("GPU"))


def resolve_device(requested: str, engine: str, who: str, hint: str = "use --device cpu") -> str:
    """``cpu`` or ``cuda`` for a run asking ``requested`` (``auto``, ``cpu``, ``cuda``) of ``engine``.

    ``auto`` takes the GPU when there is one; ``cuda`` without one is an error
    the user can fix, and says how. ``who`` names the asker, e.g. ``torch 2.13.0``.
    """
    available = gpu_available(engine)
    if requested == "cuda" and not available:
        raise BackendError(f"--device cuda asked for, but {who} sees no GPU; {hint}")
    return "cuda" if available and requested != "cpu" else "cpu"


def device_name(engine: str, device: str) -> str:
    """The model name of the device: the first GPU's as ``engine`` reports it, or this CPU's."""
    if device != "cuda":
        return cpu_model()
    module = _engine(engine)
    if engine == "torch":
        return module.cuda.get_device_name(0)
    if engine == "jax":
        return module.devices("gpu")[0].device_kind
    gpu = module.config.list_physical_devices("GPU")[0]
    return module.config.experimental.get_device_details(gpu).get("device_name", gpu.name)


def threads(engine: str, asked: int | None) -> int | str:
    """The intra-op thread count in effect, or the default said in words."""
    module = _engine(engine)
    if engine == "torch":
        return module.get_num_threads()
    if engine == "jax":
        return asked or "xla default (all usable cores)"
    return module.config.threading.get_intra_op_parallelism_threads() or "tensorflow default (all usable cores)"


def matmul_precision(engine: str) -> str:
    """What ``engine`` was told about float32 matmuls, in its own words."""
    module = _engine(engine)
    if engine == "torch":
        return module.get_float32_matmul_precision() + (", tf32 on" if module.backends.cuda.matmul.allow_tf32 else "")
    if engine == "jax":
        return str(module.config.jax_default_matmul_precision)
    return "tf32 on" if module.config.experimental.tensor_float_32_execution_enabled() else "highest (tf32 off)"


def xla_gpu_autotune_level(flags: str | None = None) -> str:
    """``--xla_gpu_autotune_level`` as set in ``XLA_FLAGS`` (the last one wins, as in XLA), or ``"default"``."""
    found = re.findall(r"--xla_gpu_autotune_level=(\S+)", os.environ.get("XLA_FLAGS", "") if flags is None else flags)
    return found[-1] if found else "default"


def precision_settings(engine: str) -> dict[str, Any]:
    """The precision and autotuning switches of ``engine`` as it reports them now
    (:data:`~vaebench.plugin.environment.PRECISION_SETTINGS`; those of other engines are left out, recorded ``None``).

    Read back from the framework, not from what the plugin meant to set: a row
    says what ran. XLA's autotune level applies to the engines that compile with XLA (jax, TensorFlow).
    """
    module = _engine(engine)
    if engine == "torch":
        return {
            "torch_cudnn_benchmark": bool(module.backends.cudnn.benchmark),
            "torch_tf32_matmul": bool(module.backends.cuda.matmul.allow_tf32),
            "torch_tf32_conv": bool(module.backends.cudnn.allow_tf32),
        }
    xla = {"xla_gpu_autotune_level": xla_gpu_autotune_level()}
    if engine == "jax":
        return {"jax_default_matmul_precision": str(module.config.jax_default_matmul_precision), **xla}
    return {"tensorflow_tf32_execution": bool(module.config.experimental.tensor_float_32_execution_enabled()), **xla}


def waiter(engine: str, device: str) -> Callable[..., None]:
    """A function blocking until ``engine``'s queued work is done (jax: the work that makes ``values``), looked up
    once so that a timed call pays only the wait: every plugin's ``_synchronize`` and explain's probes use it."""
    module = _engine(engine)
    if engine == "jax":
        return lambda *values: module.block_until_ready(values)
    if device != "cuda":
        return lambda *values: None
    if engine == "torch":
        return lambda *values: module.cuda.synchronize()
    sync = getattr(getattr(module.test, "experimental", None), "sync_devices", None) or (lambda: None)
    return lambda *values: sync()


def peak_gpu_memory_mb(engine: str) -> float | None:
    """The ``engine`` allocator's peak on the first GPU, in MiB (``None`` if it keeps no such figure).

    The allocator's own peak is what decides whether a batch size fits, which
    process RSS cannot show.
    """
    module = _engine(engine)
    if engine == "torch":
        return module.cuda.max_memory_allocated() / 2**20
    if engine == "jax":
        stats = module.devices("gpu")[0].memory_stats() or {}
        return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None
    return module.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def setup(engine: str, backend: Any, who: str, hint: str = "use --device cpu") -> str:
    """Apply the backend's ``--threads`` and ``--precision`` to ``engine`` and resolve its ``--device``:
    what every plugin's constructor does once its engine is imported. Returns ``cpu`` or ``cuda``."""
    configure(engine, backend.threads, backend.precision)
    device = resolve_device(backend.device, engine, who, hint)
    if engine == "tensorflow":
        module = _engine(engine)
        module.get_logger().setLevel("ERROR")  # retracing notes for Keras' own predict functions, not actionable here
        if device == "cpu" and gpu_available(engine):
            module.config.set_visible_devices([], "GPU")  # the run asked for the CPU
    return device


def environment(
    engine: str, backend: Any, framework: str, execution: str, versions: dict[str, str], extra: dict[str, Any] | None = None
) -> Environment:
    """The plugin's :class:`Environment` with every field ``engine`` answers filled here: the engine's
    version, device name, threads, precision, matmul precision and the precision and autotuning switches
    (:func:`precision_settings`). The plugin adds only what is its
    own: its framework family, how a step runs, other libraries' versions, framework-only settings. Every ``-o``
    option is recorded as set, after the plugin's own entries; an entry of ``extra`` with an option's name records
    that option in the plugin's words (torch's ``fused_adam`` as a bool)."""
    extra, options = extra or {}, backend.options
    extra = {**{k: v for k, v in extra.items() if k not in options}, **{k: extra.get(k, v) for k, v in options.items()}}
    return Environment(
        framework=framework,
        versions={engine: _engine(engine).__version__, **versions},
        device=backend.device_kind,
        device_name=device_name(engine, backend.device_kind),
        threads=threads(engine, backend.threads),
        precision=backend.precision,
        float32_matmul_precision=matmul_precision(engine),
        execution=execution,
        extra=extra,
        precision_settings=precision_settings(engine),
    )
