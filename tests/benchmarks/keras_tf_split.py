"""keras (Keras on TensorFlow, XLA) ``mlp``: the plugin's feed and step apart, against the TF XLA loop, in one process.

    python tests/benchmarks/keras_tf_split.py [BATCH] [ROUNDS]

The harness (``harness_ratio.py``) puts the plugin at about 0.9x the
hand-written ``jit_compile`` loop on ``mlp`` at batch 128; this says which part
of the plugin's path holds the difference. Every contender trains from the same
canonical weights on the same batches, the plugin as ``--profile best`` runs it
(``xla=1``); each is timed in rounds of 100 steps, the order rotated every round
(:mod:`split_timing`). The parts: the plugin as bench feeds it (``staged_feed``:
staging on the prefetch thread), the yardstick (``keras_yardstick``, ``xla=True``,
its batches made into tensors up front), the plugin's compiled step called
on tensors made ahead, ``train_staged`` on batches staged ahead (the contract's
path without the thread), and the prefetch thread handing over batches staged
ahead (the thread without the work). A developer's tool
(docs/where-the-time-goes.md), not a test: it asserts nothing.
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
from vaebench.run.prefetch import Prefetcher

STEPS = 100


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    spec = get_model("mlp").spec
    batches = synthetic_batches(np.random.default_rng(0), batch, spec.latent_dim)
    params = init_params(spec, 0)
    model = registry.load("keras")[0](device="cpu", threads=2, compile=False, options={"xla": "1"}).build(spec, AdamConfig())
    model.load_weights(params)
    import keras_yardstick
    import tensorflow as tf

    yard_step, yard_sync = keras_yardstick.make_step("mlp", batches, xla=True, params=params)
    ready = itertools.cycle([(tf.constant(x), tf.constant(e)) for x, e in batches])
    staged = [model.stage(x, e) for x, e in batches]
    ahead = itertools.cycle(staged)
    item = lambda v: v.numpy()  # noqa: E731
    with staged_feed(model, batches) as (plugin_step, plugin_sync), Prefetcher(itertools.cycle(staged), lambda b: b) as idle:
        contenders = {
            "plugin (as bench feeds it)": (plugin_step, plugin_sync),
            "TF XLA loop (yardstick)": (yard_step, yard_sync),
            "plugin step, tensors ahead": (lambda: model._step(*next(ready)), item),
            "train_staged, staged ahead": (lambda: model.train_staged(next(ahead)), item),
            "prefetch thread, staged ahead": (lambda: model.train_staged(next(idle)[1]), item),
        }
        times = time_contenders(contenders, rounds, STEPS, warmup=30)
    print_medians(f"keras (TF, xla=1) mlp, batch {batch}", times, rounds, STEPS)


if __name__ == "__main__":
    main()
