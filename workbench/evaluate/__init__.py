"""Splits, ranking metrics, bootstrap intervals and system evaluation."""
