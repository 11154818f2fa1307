"""keras-torch ``mlp``: the plugin's step split into parts against Keras' PyTorch guide loop, in one process.

    python tests/benchmarks/keras_torch_split.py [BATCH]

Every contender trains from the same canonical weights on the same batches;
each is timed in rounds of 100 steps, the order rotated every round, and the
median ms per step printed. The parts: the plugin as bench feeds it
(``staged_feed``), Keras' guide loop (``keras3_yardstick``), the plugin's own
step on tensors made ahead and on NumPy, that step's loss and backward with
Keras' own PyTorch Adam, and the forward and backward alone. A developer's
tool (docs/where-the-time-goes.md), not a test: it asserts nothing.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from split_timing import print_medians, time_contenders

from vaebench.measure.worker import staged_feed, synthetic_batches
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.weights import init_params
from vaebench.plugin import registry

ROUNDS, STEPS = 7, 100


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    spec = get_model("mlp").spec
    batches = synthetic_batches(np.random.default_rng(0), batch, spec.latent_dim)
    params = init_params(spec, 0)
    model = registry.load("keras-torch")[0](device="cpu", threads=2, compile=False, options={}).build(spec, AdamConfig())
    model.load_weights(params)
    import keras
    import keras3_yardstick
    import torch

    guide_step, guide_sync = keras3_yardstick.make_step("mlp", batches, params=params)
    ready = itertools.cycle([(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(e)) for x, e in batches])
    raw = itertools.cycle(batches)
    inner, variables = model._step, model.net.trainable_variables
    keras_adam = keras.optimizers.Adam(1e-3, epsilon=1e-8)  # on PyTorch: Keras' torch._foreach Adam
    keras_adam.build(variables)

    def with_keras_adam() -> object:
        loss = model.loss(*next(ready))
        model.net.zero_grad()
        loss.backward()
        with torch.no_grad():
            keras_adam.apply([v.value.grad for v in variables], variables)
        return loss.detach()

    def forward_backward() -> object:
        loss = model.loss(*next(ready))
        model.net.zero_grad()
        loss.backward()
        return loss.detach()

    item = lambda v: v.item()  # noqa: E731
    with staged_feed(model, batches) as (plugin_step, plugin_sync):
        contenders = {
            "plugin (as bench feeds it)": (plugin_step, plugin_sync),
            "Keras' guide loop": (guide_step, guide_sync),
            "plugin step, tensors ahead": (lambda: inner(*next(ready)), item),
            "plugin step, NumPy": (lambda: inner(*next(raw)), item),
            "with Keras' PyTorch Adam": (with_keras_adam, item),
            "forward and backward": (forward_backward, item),
        }
        times = time_contenders(contenders, ROUNDS, STEPS)
    print_medians(f"keras-torch mlp, batch {batch}", times, ROUNDS, STEPS)


if __name__ == "__main__":
    main()
