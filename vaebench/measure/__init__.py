"""Measuring: timing windows, statistics, interleaving, the bench worker and matrix, time to quality, parity."""
