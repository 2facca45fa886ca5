"""Workbench for multimodal product retrieval and ranking."""

__version__ = "0.1.0"
