"""Exception types of the workbench.

Every message names the file, table, column or row at fault and says what was
expected, so that a user can fix the input without reading a traceback.
"""


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on bad input."""


class CatalogError(WorkbenchError):
    """A catalog folder, table, column or row does not meet the contract."""


class MediaError(CatalogError):
    """A media file cannot be resolved inside the catalog or cannot be decoded."""


class ConfigError(WorkbenchError):
    """A configuration value is unknown or inconsistent."""


class CheckpointError(WorkbenchError):
    """A checkpoint is missing, truncated, not safetensors, or does not fit the model."""


class IndexFileError(WorkbenchError):
    """A saved index is missing files, was altered, or does not match its embeddings."""


class EvaluationError(WorkbenchError):
    """Runs, qrels or metric parameters are invalid."""
