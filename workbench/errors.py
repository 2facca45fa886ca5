"""Exception types of the workbench.

Every message names the file, table, column or row at fault and says what was
expected, so that a user can fix the input without reading a traceback.
"""


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on bad input."""


class CatalogError(WorkbenchError):
    """A catalog folder, table, column or row does not meet the contract."""


class CatalogProblemsError(CatalogError):
    """A catalog was refused for the validation problems it has; `problems` lists them, one line each."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = list(problems)


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


class ReportError(WorkbenchError):
    """A report folder is missing files, was edited after its run, or does not match its catalog."""


class QueryError(WorkbenchError):
    """A query the query lab (`workbench.query_lab`) cannot run; the message is one line for its widget."""


class EmptyQueryError(QueryError):
    """Nothing to search for: no words, no image, no sound."""


class QueryMediaError(QueryError):
    """A query image or sound (an upload, or a product's own file) that cannot be decoded or is empty."""


class ZeroWeightsError(QueryError):
    """Every modality weight is zero, so no item can be scored."""
