"""IA3Config: PEFT's IA3 fields and defaults, validated up front, plus module-name matching.

`matches` is the one place where a target/feedforward/exclude spec is compared to a module name.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass

from ia3engine.errors import ConfigError

logger = logging.getLogger(__name__)

PEFT_TYPE = "IA3"
# The PEFT release whose adapter_config.json layout we write (PEFT reads `peft_version` only
# to warn about newer files, so naming the release we test against keeps PEFT quiet).
PEFT_VERSION = "0.21.2"
ALL_LINEAR = "all-linear"
TASK_TYPES = (
    "SEQ_CLS",
    "SEQ_2_SEQ_LM",
    "CAUSAL_LM",
    "TOKEN_CLS",
    "QUESTION_ANS",
    "FEATURE_EXTRACTION",
)
# Keys PEFT writes to adapter_config.json that are not fields of ours but are expected there.
_WRITTEN_ONLY_KEYS = ("auto_mapping", "peft_version")

Spec = str | list[str] | None


def matches(spec: Spec, module_name: str) -> bool:
    """Whether `module_name` is selected by a target/feedforward/exclude/modules_to_save spec.

    A str is a regex that must match the whole name (`re.fullmatch`, as in PEFT). A list
    matches a name equal to an entry or ending with "." + entry. PEFT matches feedforward
    lists with a plain `endswith` (so "in0" would mark "lin0"); we use the dot boundary for
    every field so that one rule decides everything (spec bug #9).
    """
    if spec is None:
        return False
    if isinstance(spec, str):
        return re.fullmatch(spec, module_name) is not None
    return any(module_name == entry or module_name.endswith("." + entry) for entry in spec)


def select(spec: Spec, names: list[str]) -> list[str]:
    """The names that `matches(spec, name)` accepts, in order; fast for long lists.

    A list spec is turned into a set once and each name's dot-suffixes are looked up in it,
    so a reloaded "all-linear" config (thousands of full paths) costs O(names x depth).
    """
    if spec is None:
        return []
    if isinstance(spec, str):
        pattern = re.compile(spec)
        return [name for name in names if pattern.fullmatch(name)]
    entries = set(spec)
    return [name for name in names if not entries.isdisjoint(dot_suffixes(name))]


def dot_suffixes(name: str) -> list[str]:
    """Whole-component suffixes a list entry may equal: a.b.c gives a.b.c, b.c and c."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def is_dot_suffix(short: str, long: str) -> bool:
    """True when `short` equals `long` or is a whole-component suffix of it."""
    return short == long or long.endswith("." + short)


def covers(targets: list[str], entry: str) -> bool:
    """Whether a feedforward list entry is covered by a list of target entries.

    Either side may be the longer path: FF "down_proj" is covered by target "mlp.down_proj"
    and by the full path "model.layers.0.mlp.down_proj" (saved for "all-linear"; PEFT's
    literal subset check refuses both, spec bugs #7 and #9), and FF "mlp.down_proj" is
    covered by target "down_proj".
    """
    return any(is_dot_suffix(entry, t) or is_dot_suffix(t, entry) for t in targets)


@dataclass
class IA3Config:
    """Which modules (IA)^3 scales and how; field names and defaults follow PEFT's IA3Config."""

    # Modules to scale: None (per-architecture default), a regex (full match), a list of
    # names (equal or dot-suffix), or "all-linear" in any case (every Linear/Conv1D except the
    # output head).
    target_modules: Spec = None
    # Modules never to scale, same matching rules; an excluded module always wins.
    exclude_modules: Spec = None
    # Targets whose *input* is scaled (feedforward); others have their output scaled.
    feedforward_modules: Spec = None
    # True when the layer stores its weight as (in, out) like GPT-2's Conv1D; layers correct it.
    fan_in_fan_out: bool = False
    # Extra modules (e.g. a classifier head) trained in full and saved with the adapter.
    modules_to_save: list[str] | None = None
    # True starts every vector at ones (the model is unchanged); False draws standard normals.
    init_ia3_weights: bool = True
    # PEFT task type (SEQ_CLS, CAUSAL_LM, ...) or None for a bare model.
    task_type: str | None = None
    # Always "IA3": the adapter method this config describes.
    peft_type: str = PEFT_TYPE
    # Hub id or folder of the base model the adapter was trained on.
    base_model_name_or_path: str | None = None
    # Revision (branch, tag or commit) of the base model.
    revision: str | None = None
    # True freezes the adapter (loaded for inference only).
    inference_mode: bool = False

    def __post_init__(self):
        problems: list[str] = []
        if isinstance(self.target_modules, str) and self.target_modules.lower() == ALL_LINEAR:
            self.target_modules = ALL_LINEAR  # PEFT takes the shorthand in any case
        self.target_modules = _normalise_spec("target_modules", self.target_modules, problems)
        self.exclude_modules = _normalise_spec("exclude_modules", self.exclude_modules, problems)
        self.feedforward_modules = _normalise_spec(
            "feedforward_modules", self.feedforward_modules, problems
        )
        self.modules_to_save = _normalise_names("modules_to_save", self.modules_to_save, problems)
        for name in ("fan_in_fan_out", "init_ia3_weights", "inference_mode"):
            if not isinstance(getattr(self, name), bool):
                problems.append(
                    f"{name} must be True or False, got {getattr(self, name)!r}; "
                    f"set {name}=True or {name}=False."
                )
        for name in ("base_model_name_or_path", "revision"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                problems.append(f"{name} must be a non-empty string or None, got {value!r}.")
        if isinstance(self.task_type, str):  # PEFT's TaskType enum -> its plain value
            self.task_type = str(getattr(self.task_type, "value", self.task_type))
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            problems.append(
                f"task_type {self.task_type!r} is not a PEFT task type; "
                f"use one of {', '.join(TASK_TYPES)} or None."
            )
        if self.peft_type != PEFT_TYPE:
            problems.append(f"peft_type must be {PEFT_TYPE!r}, got {self.peft_type!r}.")
        problems.extend(_subset_problems(self.target_modules, self.feedforward_modules))
        if problems:
            raise ConfigError("Invalid IA3Config:\n- " + "\n- ".join(problems))

    def to_dict(self) -> dict:
        """JSON-ready dict with the keys PEFT writes to adapter_config.json (lists sorted)."""
        return {
            "auto_mapping": None,
            "base_model_name_or_path": self.base_model_name_or_path,
            "exclude_modules": _sorted_spec(self.exclude_modules),
            "fan_in_fan_out": self.fan_in_fan_out,
            "feedforward_modules": _sorted_spec(self.feedforward_modules),
            "inference_mode": self.inference_mode,
            "init_ia3_weights": self.init_ia3_weights,
            "modules_to_save": _sorted_spec(self.modules_to_save),
            "peft_type": self.peft_type,
            "peft_version": PEFT_VERSION,
            "revision": self.revision,
            "target_modules": _sorted_spec(self.target_modules),
            "task_type": self.task_type,
        }

    @classmethod
    def from_dict(cls, data: dict) -> IA3Config:
        """Build from an adapter_config.json dict; unknown keys are dropped with a warning."""
        if not isinstance(data, dict):
            raise ConfigError(
                f"An IA3 adapter config must be a JSON object, got {type(data).__name__}."
            )
        peft_type = data.get("peft_type", PEFT_TYPE)
        if peft_type != PEFT_TYPE:
            raise ConfigError(
                f"peft_type is {peft_type!r}: this is a {peft_type} adapter, not IA3. "
                f"Load it with a library that supports {peft_type}, or pick an IA3 adapter."
            )
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known - set(_WRITTEN_ONLY_KEYS))
        if unknown:
            logger.warning("Ignoring unknown IA3 config keys: %s", ", ".join(unknown))
        return cls(**{k: v for k, v in data.items() if k in known})


def _normalise_spec(name: str, value, problems: list[str]) -> Spec:
    """None, a compiled-checked regex str, or a de-duplicated list of non-empty names."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            problems.append(f"{name} is an empty string; give a regex, a list of names, or None.")
            return value
        if value != ALL_LINEAR:
            try:
                re.compile(value)
            except re.error as err:
                problems.append(
                    f"{name} {value!r} is not a valid regular expression ({err}); fix the "
                    f"pattern or give a list of module names instead."
                )
        return value
    return _normalise_names(name, value, problems)


def _normalise_names(name: str, value, problems: list[str]) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple, set, frozenset)):
        problems.append(
            f"{name} must be a list of module names (or None), got {type(value).__name__}."
        )
        return value
    items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    bad = [item for item in items if not isinstance(item, str) or not item.strip()]
    if bad:
        problems.append(
            f"{name} entries must be non-empty strings; remove {', '.join(map(repr, bad))}."
        )
        return items
    return list(dict.fromkeys(items))


def _subset_problems(targets: Spec, feedforward: Spec) -> list[str]:
    """Feedforward entries must be covered by the targets (dot-suffix aware, see `covers`)."""
    if not isinstance(targets, list) or not isinstance(feedforward, list):
        return []
    if not all(isinstance(x, str) for x in targets + feedforward):
        return []  # already reported as a type problem
    # Sets of suffixes instead of pairwise `covers`: a saved "all-linear" config has
    # thousands of full paths on each side.
    target_set = set(targets)
    target_suffixes = {suffix for t in targets for suffix in dot_suffixes(t)}
    missing = [
        entry
        for entry in feedforward
        if entry not in target_suffixes and target_set.isdisjoint(dot_suffixes(entry))
    ]
    if not missing:
        return []
    more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
    return [
        f"feedforward_modules {missing[:5]}{more} are not among target_modules; every "
        f"feedforward module must also be a target: add them to target_modules or remove them "
        f"from feedforward_modules."
    ]


def _sorted_spec(spec):
    return sorted(spec) if isinstance(spec, list) else spec
