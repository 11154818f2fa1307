"""explain's probes compute the products they are named after, on every backend (:mod:`vaebench.plugin.probes`).

The core differentiates each plugin's function once per engine, so every backend's probes are checked here against
the float64 reference (:mod:`vaebench.model.reference`): each layer's output, its gradient to the input and to the
weights, the loss and every weight's gradient. The values are compared as sorted multisets, which no layout or
parameter order changes and a wrong product does. Keras fixes its engine per process, so each keras backend is
checked in a process of its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vaebench.model import reference
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.weights import init_params
from vaebench.plugin import registry
from vaebench.testing.kit import sample_inputs


def _leaves(value: Any) -> list[np.ndarray]:
    """Every array in what a probe returned (a framework array, or tuples, lists and dicts of them), as float64."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
    return [np.asarray(value, np.float64)]


def _assert_same_values(got: list[np.ndarray], want: list[np.ndarray], what: str) -> None:
    got_values, want_values = (np.sort(np.concatenate([a.ravel() for a in arrays])) for arrays in (got, want))
    assert got_values.shape == want_values.shape, f"{what}: {got_values.size} values, expected {want_values.size}"
    scale = max(float(np.abs(want_values).max()), 1e-12)
    np.testing.assert_allclose(got_values, want_values, rtol=1e-3, atol=1e-4 * scale, err_msg=what)


def check(backend_name: str, model_name: str = "conv") -> None:
    """Every probe of ``backend_name`` against the reference, for each layer with weights and for the whole loss."""
    spec = get_model(model_name).spec
    params = init_params(spec, 3)
    model = registry.load(backend_name)[0](device="cpu").build(spec, AdamConfig())
    model.load_weights(params)
    gen = np.random.default_rng(0)
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    for info in spec.layers():
        if not info.param_shapes:
            continue
        x = gen.random((2, *info.in_shape), dtype=np.float32)
        g = gen.standard_normal((2, *info.out_shape), dtype=np.float32)
        out = {k: fn() for k, fn in model.layer_probe(info, {k: params[k] for k in info.param_shapes}, x, g).items()}
        x64 = x.astype(np.float64)
        y = reference.apply_layer(info, p64, x64)
        grads: dict[str, np.ndarray] = {}
        dx = reference._layer_backward(info, p64, x64, y, g.astype(np.float64), grads)
        _assert_same_values(_leaves(out["forward"]), [y], f"{backend_name} {info.name} forward")
        _assert_same_values(_leaves(out["forward+grad_input"]), [dx], f"{backend_name} {info.name} gradient to the input")
        _assert_same_values(_leaves(out["forward+grad_weights"]), list(grads.values()), f"{backend_name} {info.name} weights")
    x, eps = sample_inputs(spec.latent_dim, n=4)
    loss, grads = reference.loss_and_grads(spec, params, x, eps)
    out = {k: fn() for k, fn in model.step_probe(x, eps).items()}
    np.testing.assert_allclose(float(_leaves(out["forward"])[0]), loss, rtol=1e-4)
    got = [a for a in _leaves(out["forward+backward"]) if a.ndim]  # jax returns the loss with the gradients
    _assert_same_values(got, list(grads.values()), f"{backend_name} loss gradients")


@pytest.mark.parametrize("backend_name", ["torch", "jax"])
def test_layer_and_step_probes_compute_their_products(backend_name):
    if backend_name not in registry.installed():
        pytest.skip(f"needs the {backend_name} plugin")
    check(backend_name)


@pytest.mark.parametrize("backend_name", ["keras", "keras-jax", "keras-torch"])
def test_keras_probes_compute_their_products_on_every_engine(backend_name):
    if backend_name not in registry.installed():
        pytest.skip(f"needs the {backend_name} plugin")
    engine = {"keras": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}[backend_name]
    pytest.importorskip(engine)
    code = f"import runpy; runpy.run_path({str(Path(__file__))!r})['check']({backend_name!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
