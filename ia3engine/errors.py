"""Exceptions that carry a message a person can act on.

Every error raised for bad input names the problem and the fix; the UI and the CLI
show `str(error)` as is, and never a traceback.
"""


class IA3Error(Exception):
    """Base class: the message is written for the person who caused it."""


class ConfigError(IA3Error, ValueError):
    """An IA3Config field is invalid."""


class NoTargetModulesError(IA3Error, ValueError):
    """Nothing in the model matched the requested target modules."""


class UnsupportedLayerError(IA3Error, ValueError):
    """A targeted module is of a layer type IA3 cannot scale."""


class AdapterError(IA3Error, ValueError):
    """An adapter name is unknown, duplicated, or in a state that forbids the call."""


class AdapterFileError(IA3Error, ValueError):
    """An adapter folder or file is missing, unsafe, or does not fit the model."""


class MergeError(IA3Error, ValueError):
    """Merging would produce non-finite weights, or is impossible for this layer."""


class DataError(IA3Error, ValueError):
    """A dataset file or column mapping is unusable."""


class SpecError(IA3Error, ValueError):
    """A training spec is invalid; `problems` lists every field at fault."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ModelLoadError(IA3Error, ValueError):
    """A base model could not be found or loaded."""
