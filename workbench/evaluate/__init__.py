"""Evaluation: bootstrap intervals, tolerances, search-system selection, slices, rankers, the oracle, two-stage systems."""
