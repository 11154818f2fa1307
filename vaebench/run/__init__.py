"""One training run: the epoch loop, its session, checkpoint, results, signals, evaluation and outputs."""
