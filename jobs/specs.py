"""The bridge between a job row's JSON spec and ia3engine's TrainSpec.

Jobs store `TrainSpec.to_dict()`; this module validates on the way in, rebuilds the
TrainSpec on the way out, and knows which spec fields name dataset files.
"""

from __future__ import annotations

from pathlib import Path

from ia3engine.errors import SpecError
from ia3engine.training.spec import TrainSpec

# Spec fields that hold dataset paths: the training file and the optional eval file.
DATA_FIELDS = ("data", "eval_data")


def spec_from_dict(data: dict):
    """TrainSpec.from_dict, with anything it cannot read turned into a SpecError."""
    if not isinstance(data, dict):
        raise SpecError([f"A spec must be a mapping of field to value, not {type(data).__name__}."])
    try:
        return TrainSpec.from_dict(data)
    except SpecError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise SpecError([f"The spec could not be read ({exc}); fix the field it names."]) from exc


def validated_spec(spec) -> dict:
    """Validate a TrainSpec (or its dict form) and return the dict that is stored."""
    if not isinstance(spec, TrainSpec):
        spec = spec_from_dict(spec)
    spec.validate()
    return spec.to_dict()


def data_paths(spec: dict) -> dict[str, Path]:
    """The dataset files a spec names, by field."""
    return {field: Path(spec[field]) for field in DATA_FIELDS if spec.get(field)}


def with_data_paths(spec: dict, paths: dict[str, Path]) -> dict:
    """A copy of `spec` reading its datasets from `paths` (materialised copies)."""
    return {**spec, **{field: str(path) for field, path in paths.items()}}
