"""Serving: one base model, many adapters, one call per batch with a different adapter per row.

Reads each adapter's training_info.json for its labels, prompt and kind; `None` in
adapter_names is the untuned base (for encoders: the adapter's head with the vectors at one).
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch

from ia3engine.config import IA3Config
from ia3engine.errors import AdapterError
from ia3engine.model import get_ia3_model, load_ia3_model
from ia3engine.routing import BASE
from ia3engine.serve.adapter_info import read_training_info, render_input
from ia3engine.training.loading import PEFT_TASK_TYPE, base_kind, load_base, resolve_device
from ia3engine.training.tasks import DEFAULT_CHOICE_PROMPT, make_task
from ia3engine.wrappers import is_adapter_param, is_saved_copy

logger = logging.getLogger(__name__)

UNTUNED_SUFFIX = "__untuned"
NO_HEAD = (
    "The untuned {model} is an encoder: it has no head to answer with (a new one would be "
    "random). Train an adapter on your labels, or classify with a causal or seq2seq base."
)


def base_row(name: str) -> str:
    """The row name for the untuned base answering with adapter `name`'s labels, prompt and
    (encoders) head: unlike None, its output does not depend on the other rows of the batch."""
    return name + UNTUNED_SUFFIX


def _local(rows: list[int], by_index: dict | None) -> dict:
    """{position in `rows`: value} for the rows of one forward that `by_index` names."""
    if not by_index:
        return {}
    return {local: by_index[i] for local, i in enumerate(rows) if i in by_index}


class Predictor:
    """One base model with any number of adapters; `predict` routes each row to its adapter."""

    def __init__(self, model: str, task: str = "classify", device=None, quantize=None):
        self.model_name, self.task_name, self.quantize = model, task, quantize
        self.device = resolve_device(device)
        self.adapters: dict[str, dict] = {}  # name -> training info (+ its group)
        self._groups: dict = {}  # base key -> IA3Model (encoders: one per label count)
        self._plain = None  # a bare generative base, for untuned rows before any adapter
        self._base_bytes: int | None = None  # base_bytes(), counted once per set of groups
        self._shared_ones: dict = {}  # (group, layer, shape, ...) -> the twins' ones there

    # ---- adapters --------------------------------------------------------------------------
    def add_adapter(self, name: str, folder) -> None:
        """Load the adapter in `folder` under `name`."""
        if name in self.adapters:
            raise AdapterError(f"An adapter named '{name}' is loaded already; pick another name.")
        info = read_training_info(folder)
        if info.get("task") != self.task_name:
            raise AdapterError(
                f"Adapter '{name}' was trained for {info.get('task')}, but this Predictor "
                f"serves {self.task_name}; open a Predictor with task='{info.get('task')}'."
            )
        key = len(info.get("labels") or []) if info.get("kind") == "encoder" else "lm"
        model = self._groups.get(key)
        if model is None:
            base = self._load_base(info)
            model = load_ia3_model(base.model, folder, name).eval()
            self._groups[key] = model
            self._base_bytes = None  # a new base: count again
            self._tokenizer = base.tokenizer
            self._kind = base.kind
        else:
            model.load_adapter(folder, name)
        if self._kind == "encoder":
            # The untuned row keeps this adapter's head (an encoder has no head of its own);
            # its vectors are the layer's one shared tensor of ones, not a copy per adapter.
            twin = name + UNTUNED_SUFFIX
            model.load_adapter(folder, twin)
            for path, layer in model.ia3_layers():
                if twin in layer.ia3_l:
                    layer.ia3_l[twin] = self._ones_like(key, path, layer.ia3_l[twin])
        # no model.eval() here: it would visit every earlier adapter's head copy on each load;
        # what a load adds (wrappers, head copies) takes the eval mode of what it wraps or copies
        self.adapters[name] = {**info, "group": key, "task_obj": self._task_for(info)}

    def add_untuned(self, labels: list[str] | None = None, name: str = "untuned") -> None:
        """An adapter that changes nothing (vectors at one), for scoring the base alone.

        Generative bases answer by rank classification over `labels`; an encoder gets a new,
        untrained head, so expect chance-level accuracy from it.
        """
        info = {"task": self.task_name, "labels": list(labels or []), "template": None}
        base = self._load_base(info)
        self._tokenizer, self._kind = base.tokenizer, base.kind
        info.update(
            kind=base.kind, prompt=DEFAULT_CHOICE_PROMPT if base.kind != "encoder" else None
        )
        key = len(info["labels"]) if base.kind == "encoder" else "lm"
        if key in self._groups:
            raise AdapterError("add_untuned must come before any adapter on the same base.")
        config = IA3Config(task_type=PEFT_TASK_TYPE[base.kind])
        self._groups[key] = get_ia3_model(base.model, config, name).eval()
        self._base_bytes = None  # a new base: count again
        self.adapters[name] = {**info, "group": key, "task_obj": self._task_for(info)}

    def add_labels(self, name: str, labels: list[str]) -> None:
        """The untuned base answering by rank classification over `labels` under `name`: its
        rows run the bare base (no vectors), scored as add_untuned's are. Causal and seq2seq
        bases only; an encoder has no head of its own (NO_HEAD)."""
        if name in self.adapters:
            raise AdapterError(f"An adapter named '{name}' is loaded already; pick another name.")
        kind = self._kind if self._groups else base_kind(self.model_name)
        if kind == "encoder" or self.task_name != "classify":
            raise AdapterError(NO_HEAD.format(model=self.model_name))
        if "lm" not in self._groups:  # the base itself, with no adapter yet
            base = self._load_base({"labels": labels})
            self._tokenizer, self._kind = base.tokenizer, base.kind
            config = IA3Config(task_type=PEFT_TASK_TYPE[base.kind])
            self._groups["lm"] = get_ia3_model(base.model, config, UNTUNED_SUFFIX).eval()
            self._base_bytes = None
        info = {"task": "classify", "labels": list(labels), "template": None, "kind": kind}
        info.update(prompt=DEFAULT_CHOICE_PROMPT, group="lm", bare=True)
        self.adapters[name] = {**info, "task_obj": self._task_for(info)}

    def add_mix(self, name: str, adapters: list[str], weights: list[float]) -> None:
        """A weighted mix of loaded adapters under `name` (vectors: sum of w_i * l_i).

        The adapters must answer with the same labels; see ia3engine.mixing for what mixes.
        """
        if name in self.adapters:
            raise AdapterError(f"An adapter named '{name}' is loaded already; pick another name.")
        unknown = [a for a in adapters if a not in self.adapters]
        if unknown:
            raise AdapterError(f"Unknown adapter(s) {unknown}; loaded: {sorted(self.adapters)}.")
        infos = [self.adapters[a] for a in adapters]
        if len({tuple(i.get("labels") or []) for i in infos}) > 1:
            raise AdapterError(
                f"Adapters {adapters} answer with different labels; only adapters with the same "
                "label set can be mixed."
            )
        model = self._groups[infos[0]["group"]]
        model.add_weighted_adapter(list(adapters), [float(w) for w in weights], name)
        model.eval()
        self.adapters[name] = dict(infos[0])

    def _ones_like(self, group, path: str, vector: torch.Tensor) -> torch.nn.Parameter:
        """The one tensor of ones every untuned twin of this layer shares (never trained,
        never written: vectors at one scale nothing)."""
        key = (group, path, tuple(vector.shape), vector.dtype, vector.device)
        ones = self._shared_ones.get(key)
        if ones is None:
            ones = torch.nn.Parameter(torch.ones_like(vector), requires_grad=False)
            self._shared_ones[key] = ones
        return ones

    def remove_adapter(self, name: str) -> None:
        """Unload an adapter (and, for encoders, its untuned twin)."""
        info = self.adapters.pop(name, None)
        if info is None:
            raise AdapterError(f"Unknown adapter '{name}'; loaded: {sorted(self.adapters)}.")
        model = self._groups[info["group"]]
        for key in (name, name + UNTUNED_SUFFIX):
            if key in model.peft_config:
                model.delete_adapter(key)

    def adapter_bytes(self, name: str) -> int:
        """Bytes this adapter holds here: its vectors and saved copies (heads), with its untuned
        twin's head (an encoder's base row; the twin's vectors are ones shared by all)."""
        model = self._groups[self.adapters[name]["group"]]
        names = (name, base_row(name))
        shared = {id(t) for t in self._shared_ones.values()}
        held = [
            v
            for _, layer in model.ia3_layers()
            for n in names
            if n in layer.ia3_l
            for v in [layer.ia3_l[n]]
            if id(v) not in shared
        ]
        for _, module in model.saved_modules():
            for n in names:
                if n in module.modules_to_save:
                    held.extend(module.modules_to_save[n].parameters())
        return sum(t.numel() * t.element_size() for t in held)

    def base_bytes(self) -> int:
        """Bytes of the loaded base weights (an encoder holds one base per label count): the
        bases' own tensors, not the adapters' vectors or saved copies (adapter_bytes counts
        those). Counted once when a base is loaded, so the per-batch check costs nothing."""
        if self._base_bytes is None:
            self._base_bytes = self._count_base_bytes()
        return self._base_bytes

    def _count_base_bytes(self) -> int:
        seen, total = set(), 0
        for model in self._groups.values():
            named = [*model.named_parameters(), *model.named_buffers()]
            for name, tensor in named:
                if is_adapter_param(name) or is_saved_copy(name) or id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
        return total

    def labels_of(self, name: str | None = None) -> list[str]:
        """The labels an adapter answers with (None: the adapter untuned rows use)."""
        return list(self.adapters[name or self._owner_for([])]["labels"])

    def _load_base(self, info: dict):
        labels = info.get("labels") or None
        return load_base(
            self.model_name,
            task=self.task_name,
            num_labels=len(labels) if labels else None,
            quantize=self.quantize,
            device=self.device,
            labels=labels,
        )

    def _task_for(self, info: dict):
        length = (info.get("spec") or {}).get("max_length") or 256
        labels = [] if info["task"] == "generate" else info["labels"]
        return make_task(
            info["task"],
            self._kind,
            self._tokenizer,
            labels,
            length,
            self.device,
            info.get("prompt"),
        )

    # ---- prediction ------------------------------------------------------------------------
    def predict(
        self,
        texts: list[str],
        adapter_names: list[str | None] | None = None,
        *,
        max_new_tokens: int | None = None,
        on_piece: dict | None = None,
        should_stop: dict | None = None,
    ) -> list:
        """One result per text: {"label", "probs"} (classify) or {"text"} (generate).

        max_new_tokens bounds generation (None: the task's default). on_piece (generate):
        {text index: callback(piece)} streams those rows' text as it is generated; a row's
        pieces join to its "text". should_stop (generate): {text index: callable() -> bool}
        ends a row early once it turns true (its "text": what was generated so far)."""
        names = list(adapter_names) if adapter_names is not None else [None] * len(texts)
        if len(names) != len(texts):
            raise AdapterError(
                f"Got {len(texts)} texts but {len(names)} adapter names; give one name per text."
            )
        unknown = sorted({n for n in names if n is not None and self._stem(n) is None})
        if unknown:
            raise AdapterError(f"Unknown adapter(s) {unknown}; loaded: {sorted(self.adapters)}.")
        owners = [self._stem(n) if n is not None else self._owner_for(names) for n in names]
        results: list = [None] * len(texts)
        batches: dict = defaultdict(list)
        for i, owner in enumerate(owners):
            batches[self._batch_key(owner)].append(i)
        for rows in batches.values():
            streams = _local(rows, on_piece)
            stops = _local(rows, should_stop)
            self._predict_rows(rows, texts, names, owners, results, max_new_tokens, streams, stops)
        return results

    def truncated(self, texts: list[str], name: str | None = None) -> int:
        """How many of `texts` are longer than the tokens the adapter reads (its training
        max_length): those are cut, as training cut them."""
        owner = name or self._owner_for([])
        info = self.adapters[owner]
        limit = info["task_obj"].max_length
        rendered = [render_input(info, text) for text in texts]
        lengths = self._tokenizer(rendered, add_special_tokens=True)["input_ids"]
        return sum(len(ids) > limit for ids in lengths)

    def _owner_for(self, names: list) -> str:
        """Whose labels (and head) an untuned row uses: the batch's first adapter, else the last added."""
        named = [self._stem(n) for n in names if n is not None]
        if named:
            return named[0]
        if not self.adapters:
            raise AdapterError(
                "No adapter is loaded: add one first (add_adapter); the untuned base needs an "
                "adapter's labels and prompt to answer."
            )
        return list(self.adapters)[-1]

    def _stem(self, name: str) -> str | None:
        """The loaded adapter a row name stands for (itself, or the one its base_row is of)."""
        if name in self.adapters:
            return name
        stem = name[: -len(UNTUNED_SUFFIX)] if name.endswith(UNTUNED_SUFFIX) else None
        if stem not in self.adapters:
            return None
        if self._kind == "encoder":  # an encoder's base row needs the adapter's untuned twin
            model = self._groups[self.adapters[stem]["group"]]
            return stem if name in model.peft_config else None
        return stem

    def _batch_key(self, owner: str):
        info = self.adapters[owner]
        if self.task_name == "generate":  # one generate() for every adapter that cuts alike
            return ("generate", info["group"], info["task_obj"].max_length)
        # encoders share one forward per label count; choice sets differ per adapter
        return ("group", info["group"]) if self._kind == "encoder" else ("owner", owner)

    @torch.no_grad()
    def _predict_rows(
        self, rows, texts, names, owners, results, max_new_tokens=None, streams=None, stops=None
    ) -> None:
        first = self.adapters[owners[rows[0]]]
        model = self._groups[first["group"]]
        task = first["task_obj"]
        inputs = [render_input(self.adapters[owners[i]], texts[i]) for i in rows]
        routed = []
        for i in rows:
            if names[i] in self.adapters and not self.adapters[names[i]].get("bare"):
                routed.append(names[i])
            else:
                routed.append(owners[i] + UNTUNED_SUFFIX if self._kind == "encoder" else BASE)
        if self.task_name == "generate":
            outputs = task.generate(
                model,
                inputs,
                adapter_names=routed,
                max_new_tokens=max_new_tokens,
                on_piece=streams or None,
                should_stop=stops or None,
            )
            for i, text in zip(rows, outputs, strict=True):
                results[i] = {"text": text}
            return
        probs = task.probs(model, inputs, adapter_names=routed)
        for i, row in zip(rows, probs, strict=True):
            labels = self.adapters[owners[i]]["labels"]
            results[i] = {
                "label": labels[int(row.argmax())],
                "probs": {label: float(p) for label, p in zip(labels, row, strict=True)},
            }
