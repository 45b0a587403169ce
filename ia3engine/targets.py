"""Which modules (IA)^3 scales: PEFT's per-architecture table, a structural fallback, preview.

`resolve_targets` is the single decision point; layers/model/io only consume its answer.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field

from torch import nn

from ia3engine.config import ALL_LINEAR, IA3Config, dot_suffixes, select
from ia3engine.errors import NoTargetModulesError, UnsupportedLayerError
from ia3engine.structure import detect_structure, in_out_features, vector_length
from ia3engine.wrappers import (
    LINEAR_TYPES,
    SUPPORTED_LAYER_TYPES,
    is_adapter_param,
    is_saved_copy,
    layer_type,
    outer_modules,
    param_count,
    unsupported_message,
    unwrap,
)

logger = logging.getLogger(__name__)

# PEFT's default IA3 mappings (utils/constants.py), one row per model_type.
TARGET_MODULES: dict[str, list[str]] = {
    "t5": ["k", "v", "wo"],
    "mt5": ["k", "v", "wi_1"],
    "gpt2": ["c_attn", "mlp.c_proj"],
    "bloom": ["query_key_value", "mlp.dense_4h_to_h"],
    "roberta": ["key", "value", "output.dense"],
    "opt": ["q_proj", "k_proj", "fc2"],
    "gptj": ["q_proj", "v_proj", "fc_out"],
    "gpt_neox": ["query_key_value", "dense_4h_to_h"],
    "gpt_neo": ["q_proj", "v_proj", "c_proj"],
    "bart": ["q_proj", "v_proj", "fc2"],
    "gpt_bigcode": ["c_attn", "mlp.c_proj"],
    "llama": ["k_proj", "v_proj", "down_proj"],
    "llama4": ["q_proj", "v_proj", "down_proj"],
    "mistral": ["k_proj", "v_proj", "down_proj"],
    "mixtral": ["k_proj", "v_proj", "w2"],
    "bert": ["key", "value", "output.dense"],
    "deberta-v2": ["key_proj", "value_proj", "output.dense"],
    "deberta": ["in_proj", "output.dense"],
    "RefinedWebModel": ["query_key_value", "dense_4h_to_h"],
    "RefinedWeb": ["query_key_value", "dense_4h_to_h"],
    "falcon": ["query_key_value", "dense_4h_to_h"],
    "phi": ["q_proj", "v_proj", "fc2"],
    "gemma": ["q_proj", "v_proj", "down_proj"],
    "gemma2": ["q_proj", "v_proj", "down_proj"],
    "gemma3_text": ["q_proj", "v_proj", "down_proj"],
    "qwen2": ["q_proj", "v_proj", "down_proj"],
    "qwen3": ["q_proj", "v_proj", "down_proj"],
}
FEEDFORWARD_MODULES: dict[str, list[str]] = {
    "t5": ["wo"],
    "mt5": [],
    "gpt2": ["mlp.c_proj"],
    "bloom": ["mlp.dense_4h_to_h"],
    "roberta": ["output.dense"],
    "opt": ["fc2"],
    "gptj": ["fc_out"],
    "gpt_neox": ["dense_4h_to_h"],
    "gpt_neo": ["c_proj"],
    "bart": ["fc2"],
    "gpt_bigcode": ["mlp.c_proj"],
    "llama": ["down_proj"],
    "llama4": ["down_proj"],
    "mistral": ["down_proj"],
    "mixtral": ["w2"],
    "bert": ["output.dense"],
    "deberta-v2": ["output.dense"],
    "deberta": ["output.dense"],
    "RefinedWebModel": ["dense_4h_to_h"],
    "RefinedWeb": ["dense_4h_to_h"],
    "falcon": ["dense_4h_to_h"],
    "phi": ["fc2"],
    "gemma": ["down_proj"],
    "gemma2": ["down_proj"],
    "gemma3_text": ["down_proj"],
    "qwen2": ["down_proj"],
    "qwen3": ["down_proj"],
}


# Leaf names of output heads; only looked for outside the repeated blocks (see _head_names).
_HEAD_LEAVES = {"lm_head", "classifier", "score", "qa_outputs", "classification_head", "cls"}


@dataclass
class Target:
    """One module to scale. `module` is the module at `name` (an IA3 wrapper if already wrapped)."""

    name: str
    module: nn.Module
    feedforward: bool
    layer_type: str


def model_type_of(model: nn.Module) -> str:
    """`model.config.model_type` for transformers models, "custom" otherwise."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return model_type if isinstance(model_type, str) and model_type else "custom"


def _walk(model: nn.Module, protected: list[str]) -> list[tuple[str, nn.Module]]:
    """Named modules a target may be chosen from, in registration order.

    Skips the root, the insides of IA3 wrappers (`base_layer`, `ia3_*` parameter holders) and
    everything inside `modules_to_save` modules, which PEFT never targets.
    """
    out = []
    for name, module in outer_modules(model):
        if not name:
            continue
        if any(name == p or name.startswith(p + ".") for p in protected):
            continue
        out.append((name, module))
    return out


def saved_module_names(model: nn.Module, spec) -> list[str]:
    """Outermost names of the modules a modules_to_save spec matches.

    The insides of our own wrappers (base_layer, original_module, modules_to_save copies) are
    skipped, so the answer is the same before and after the model is wrapped.
    """
    if not spec:
        return []
    names = [n for n, _ in outer_modules(model) if n]
    found: list[str] = []
    for name in select(spec, names):
        if not any(name.startswith(p + ".") for p in found):
            found.append(name)
    return found


def _head_names(model: nn.Module, walked: list[tuple[str, nn.Module]]) -> set[str]:
    """Names of output-head layers: never chosen automatically (table, structural, all-linear)."""
    heads: set[str] = set()
    get_output = getattr(model, "get_output_embeddings", None)
    try:
        output = get_output() if callable(get_output) else None
    except (AttributeError, NotImplementedError):  # some remote-code models leave it undone
        output = None
    head_roots = [
        name
        for name, _ in walked
        if name.split(".")[-1] in _HEAD_LEAVES and not any(p.isdigit() for p in name.split("."))
    ]
    for name, module in walked:
        if output is not None and unwrap(module) is unwrap(output):
            heads.add(name)
        if any(name == r or name.startswith(r + ".") for r in head_roots):
            heads.add(name)
    if not heads and output is None and not hasattr(model, "config"):
        # A plain nn.Module: its last scalable layer is taken to be the output layer (an
        # MLP's or CNN's classifier) unless it sits inside a repeated block ("layers.3.fc").
        scalable = [name for name, module in walked if layer_type(module) is not None]
        last = scalable[-1].split(".") if len(scalable) > 1 else None
        if last and (len(last) == 1 or not any(p.isdigit() for p in last)):
            heads.add(scalable[-1])
    return heads


@dataclass
class _Choice:
    names: list[str]  # targeted module names, in model order
    feedforward: set[str]
    source: str  # "table", "structural" or "config"
    model_type: str
    modules: dict[str, nn.Module]
    protected: list[str]  # modules_to_save roots
    all_names: list[str]  # every name a target may be chosen from (what a reload matches)


def _choose(model: nn.Module, config: IA3Config) -> _Choice:
    """Apply the config to the model: which names are targets, which are feedforward."""
    model_type = model_type_of(model)
    protected = saved_module_names(model, config.modules_to_save)
    walked = _walk(model, protected)
    all_names = [n for n, _ in walked]
    heads = _head_names(model, walked)
    spec = config.target_modules
    structure = None
    if spec == ALL_LINEAR:
        source = "config"
        names = [n for n, m in walked if layer_type(m) in LINEAR_TYPES and n not in heads]
    elif spec is not None:
        source = "config"
        names = select(spec, all_names)
    else:
        source = "table"
        table = TARGET_MODULES.get(model_type, [])
        names = [n for n in select(table, all_names) if n not in heads]
        if not names:  # not in the table, or renamed layers: look at the structure instead
            source = "structural"
            structure = detect_structure(model, walked, heads)
            names = structure[0]
    excluded = set(select(config.exclude_modules, names))
    names = [n for n in names if n not in excluded]
    if not names:
        raise NoTargetModulesError(_nothing_matched_message(model_type, config, walked))
    modules = dict(walked)
    for name in names:
        if layer_type(modules[name]) is None:
            raise UnsupportedLayerError(unsupported_message(name, modules[name]))
    if config.feedforward_modules is not None:
        ff = set(select(config.feedforward_modules, names))
    elif source != "structural" and model_type in FEEDFORWARD_MODULES:
        ff = set(select(FEEDFORWARD_MODULES[model_type], names))
    else:
        structure = structure or detect_structure(model, walked, heads)
        ff = structure[1] & set(names)
    return _Choice(names, ff, source, model_type, modules, protected, all_names)


def _resolve(model: nn.Module, config: IA3Config) -> tuple[_Choice, list[Target], IA3Config]:
    choice = _choose(model, config)
    targets = [
        Target(
            name=name,
            module=choice.modules[name],
            feedforward=name in choice.feedforward,
            layer_type=layer_type(choice.modules[name]),
        )
        for name in choice.names
    ]
    saved_targets, saved_ff = _saved_form(config, choice)
    resolved = dataclasses.replace(
        config, target_modules=saved_targets, feedforward_modules=saved_ff
    )
    logger.info(
        "IA3 targets (%s, %s): %d modules, %d feedforward",
        choice.source,
        choice.model_type,
        len(targets),
        len(choice.feedforward),
    )
    return choice, targets, resolved


def resolve_targets(
    model: nn.Module, config: IA3Config | None = None
) -> tuple[list[Target], IA3Config]:
    """The modules to scale and a copy of `config` with both module fields resolved.

    The resolved fields are what gets saved, and they select exactly these modules with these
    feedforward modes both here and in PEFT (see `_saved_form`): the user's spec or the
    table's names when they do, full module paths otherwise ("all-linear", the structural
    fallback, feedforward lists PEFT's subset check or its plain `endswith` would misread).
    """
    _, targets, resolved = _resolve(model, config if config is not None else IA3Config())
    return targets, resolved


def _saved_form(config: IA3Config, choice: _Choice) -> tuple:
    """(target_modules, feedforward_modules) to save: the first form, most readable first, that
    PEFT accepts and that selects `choice` exactly, both in PEFT and in our own reload.

    Tried in turn: the user's (or the table's) form; the user's targets with full-path
    feedforward entries (a target regex has no subset check); full paths for both; and, when
    a full path is itself a suffix of another module's name, escaped full-match regexes,
    which select exactly under both rules.
    """
    wanted = {name: name in choice.feedforward for name in choice.names}
    targets = _saved_targets(config, choice)
    paths = list(choice.names)
    ff_paths = [name for name in paths if name in choice.feedforward]
    candidates = [
        (targets, _saved_feedforward(config, choice, targets)),
        (targets, ff_paths),
        (paths, ff_paths),
        (paths, _exact_regex(ff_paths)),
        (_exact_regex(paths), _exact_regex(ff_paths)),
    ]
    for saved_targets, saved_ff in candidates:
        if _reads_back(saved_targets, saved_ff, config.exclude_modules, choice.all_names, wanted):
            return saved_targets, saved_ff
    # unreachable: the last candidate's full-match regexes select exactly `wanted`
    raise AssertionError(f"no saved form selects {sorted(wanted)} exactly")


def _exact_regex(names: list[str]):
    """A regex that full-matches exactly `names` ([] when there are none)."""
    return "|".join(re.escape(name) for name in names) if names else []


def _reads_back(targets, feedforward, exclude, all_names: list[str], wanted: dict) -> bool:
    """Whether a saved pair selects `wanted` ({name: feedforward}) here and in PEFT 0.21.2.

    PEFT's rules (its IA3Config and tuner): target lists match a name equal to an entry or
    ending with "." + entry, a str is `re.fullmatch`ed, exclude_modules likewise; two lists
    must be literal subsets (feedforward <= targets), and a feedforward list entry marks any
    target whose name merely ends with it (no dot boundary, spec bug #9). Our reload matches
    feedforward lists on the dot boundary instead (`select`), so both must agree.
    """
    if targets is None or feedforward is None or targets == ALL_LINEAR:
        return False
    if isinstance(targets, list) and isinstance(feedforward, list):
        if not set(feedforward) <= set(targets):
            return False
    excluded = set(select(exclude, all_names))
    picked = [name for name in select(targets, all_names) if name not in excluded]
    if set(picked) != set(wanted):
        return False
    ours = set(select(feedforward, picked))
    if any((name in ours) != wanted[name] for name in picked):
        return False
    is_feedforward = _peft_feedforward(feedforward)
    return all(is_feedforward(name) == wanted[name] for name in picked)


def _peft_feedforward(spec):
    """PEFT's feedforward test for a name: a regex full-matches; a list entry is any plain
    suffix of the name (checked as a set lookup per suffix, so long lists stay cheap)."""
    if isinstance(spec, str):
        pattern = re.compile(spec)
        return lambda name: pattern.fullmatch(name) is not None
    entries = set(spec)
    return lambda name: any(name[i:] in entries for i in range(len(name)))


def _saved_targets(config: IA3Config, choice: _Choice):
    if config.target_modules is not None and config.target_modules != ALL_LINEAR:
        return config.target_modules
    if choice.source == "table":
        return list(TARGET_MODULES[choice.model_type])
    return list(choice.names)  # structural and all-linear: full paths, as PEFT saves them


def _saved_feedforward(config: IA3Config, choice: _Choice, saved_targets):
    if config.feedforward_modules is not None:
        return config.feedforward_modules
    from_table = choice.source != "structural" and choice.model_type in FEEDFORWARD_MODULES
    if choice.source == "table" or (isinstance(saved_targets, str) and from_table):
        return list(FEEDFORWARD_MODULES[choice.model_type])
    ff_names = [n for n in choice.names if n in choice.feedforward]
    if isinstance(saved_targets, str):
        return ff_names
    # Prefer the target entries that select only feedforward modules ("down_proj"), so the
    # saved FF list is a literal subset of the saved targets; full paths fill any gap (which
    # PEFT's subset check refuses: `_saved_form` then saves full paths for both).
    hits: dict[str, list[str]] = {}
    for name in choice.names:
        for suffix in dot_suffixes(name):
            hits.setdefault(suffix, []).append(name)
    entries = [
        entry
        for entry in saved_targets
        if hits.get(entry) and all(n in choice.feedforward for n in hits[entry])
    ]
    covered = set(select(entries, ff_names))
    return entries + [n for n in ff_names if n not in covered]


def _nothing_matched_message(model_type: str, config: IA3Config, walked) -> str:
    leaves = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in walked if layer_type(m)))
    examples = ", ".join(leaves[:12]) or "(no Linear, Conv1D or Conv2d/3d layers)"
    return (
        f"No module of this {model_type} model matched target_modules="
        f"{config.target_modules!r} (exclude_modules={config.exclude_modules!r}). "
        f"Layers it has: {examples}. Set target_modules to a list of these names "
        f"(e.g. {leaves[:2]!r}) or a regex matching full module names."
    )


@dataclass
class TargetPreview:
    """What injecting IA3 would do, without doing it."""

    rows: list[dict]  # one per target: module, layer_type, feedforward, params
    trainable_params: int  # IA3 vector entries plus the modules_to_save parameters
    total_params: int  # every base-model parameter
    source: str  # "table", "structural" or "config"
    model_type: str
    saved_modules: list[str] = field(default_factory=list)  # modules_to_save roots found
    config: IA3Config | None = None  # the resolved config, as it would be saved

    def summary(self) -> str:
        """One line for people, e.g. for a UI label or a log."""
        ff = sum(1 for row in self.rows if row["feedforward"])
        share = 100 * self.trainable_params / self.total_params if self.total_params else 0.0
        return (
            f"{len(self.rows)} modules scaled ({ff} feedforward) on {self.model_type} "
            f"[{self.source}]: {self.trainable_params:,} trainable of "
            f"{self.total_params:,} parameters ({share:.4f}%)"
        )


def preview_targets(model: nn.Module, config: IA3Config | None = None) -> TargetPreview:
    """The targets, their vector sizes and the trainable count; the model is not changed."""
    config = config if config is not None else IA3Config()
    choice, targets, resolved = _resolve(model, config)
    rows = [
        {
            "module": t.name,
            "layer_type": t.layer_type,
            "feedforward": t.feedforward,
            "params": vector_length(t.module, t.feedforward),
        }
        for t in targets
    ]
    # Counted on the unwrapped model: a saved module's original, no IA3 vectors or copies.
    saved_params = {
        id(p): param_count(p)
        for name in choice.protected
        for p in unwrap(model.get_submodule(name)).parameters()
    }
    total = {
        id(p): param_count(p)
        for name, p in model.named_parameters()
        if not (is_adapter_param(name) or is_saved_copy(name))
    }
    return TargetPreview(
        rows=rows,
        trainable_params=sum(r["params"] for r in rows) + sum(saved_params.values()),
        total_params=sum(total.values()),
        source=choice.source,
        model_type=choice.model_type,
        saved_modules=choice.protected,
        config=resolved,
    )


__all__ = [
    "FEEDFORWARD_MODULES",
    "SUPPORTED_LAYER_TYPES",
    "TARGET_MODULES",
    "Target",
    "TargetPreview",
    "in_out_features",
    "layer_type",
    "model_type_of",
    "preview_targets",
    "resolve_targets",
    "vector_length",
]
