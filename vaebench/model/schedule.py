"""Learning-rate schedules per epoch, written once in the core: every backend trains on the same rates.

``constant`` keeps ``--lr`` for the whole run. ``burda`` is the schedule of
Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", 2015
(arXiv:1509.00519), section 5: stage ``i = 0 .. 7`` lasts ``3**i`` passes over
the data at ``lr * 10**(-i / 7)`` (``lr`` 0.001 in the paper), 3,280 passes in
all; a run with fewer ``--epochs`` trains the schedule's first epochs, and
epochs past its end stay at the last stage's rate.

How a rate reaches a backend: the contract has no setter, and needs none. At a
stage boundary the runner exports the model's weights and Adam state exactly
and builds the backend's model again with the new :class:`~vaebench.model.config.AdamConfig`
(:meth:`vaebench.run.session.Session.with_adam`), the path a bit-exact resume
already takes, so no plugin writes a line for it; the compiled step is built
again at each of the 7 stage boundaries of 3,280 epochs, and that compile is
inside the stage's first epoch's time (``epoch_seconds``, images/s).
"""

from __future__ import annotations

from vaebench.errors import ConfigError

#: the schedules ``--lr-schedule`` takes
SCHEDULES = ("constant", "burda")
#: Burda et al.'s stages: stage ``i`` lasts ``3**i`` epochs
BURDA_STAGES = 8
#: the whole of Burda et al.'s schedule, in epochs: ``sum(3**i for i in range(8))``
BURDA_EPOCHS = sum(3**i for i in range(BURDA_STAGES))


def burda_stage(epoch: int) -> int:
    """The stage ``i`` that 1-based ``epoch`` trains in: epochs 1 | 2-4 | 5-13 | ... | 1094-3280, the last past it."""
    if epoch < 1:
        raise ConfigError(f"epochs count from 1, got {epoch}")
    end = 0
    for stage in range(BURDA_STAGES):
        end += 3**stage
        if epoch <= end:
            return stage
    return BURDA_STAGES - 1


def learning_rate(schedule: str, lr: float, epoch: int) -> float:
    """Adam's learning rate in 1-based ``epoch`` of a run with base rate ``lr`` on ``schedule``."""
    if schedule == "constant":
        return lr
    if schedule == "burda":
        return lr * 10 ** (-burda_stage(epoch) / 7)
    raise ConfigError(f"unknown --lr-schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
