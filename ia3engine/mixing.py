"""Weighted mixing of IA3 adapters into a new adapter: l_new = sum_i w_i * l_i per module.

Unlike PEFT, an adapter that does not touch a module counts there as identity (all ones),
and mixing into an existing name raises instead of silently doing nothing.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from ia3engine.errors import AdapterError

logger = logging.getLogger(__name__)


def add_weighted_adapter(model, adapters: list[str], weights: list[float], adapter_name: str):
    """Add `adapter_name` to `model` (an IA3Model), frozen and inactive, as a weighted mix."""
    model.check_new_name(adapter_name)
    if not adapters or len(adapters) != len(weights):
        raise AdapterError(
            f"add_weighted_adapter needs one weight per adapter; got {len(adapters)} adapters "
            f"and {len(weights)} weights."
        )
    model.check_known(adapters)
    configs = [model.peft_config[name] for name in adapters]
    sources = _saved_module_sources(model, adapters)
    config = dataclasses.replace(
        configs[0],
        target_modules=_union("target_modules", [c.target_modules for c in configs]),
        feedforward_modules=_union("feedforward_modules", [c.feedforward_modules for c in configs]),
        modules_to_save=_union("modules_to_save", [c.modules_to_save for c in configs]),
        inference_mode=False,
    )
    plans = _layer_plans(model, adapters)  # validated before the model changes
    for layer, feedforward in plans:
        vectors = [layer.ia3_l[name].detach() if name in layer.ia3_l else None for name in adapters]
        shape = layer.vector_shape(feedforward)
        mixed = sum(
            weight * (torch.ones(shape) if v is None else v.cpu().float())
            for weight, v in zip(weights, vectors, strict=True)
        )
        layer.add_adapter(adapter_name, feedforward)
        with torch.no_grad():
            layer.ia3_l[adapter_name].copy_(mixed)
        layer.ia3_l[adapter_name].requires_grad_(False)
    model.add_saved_modules(adapter_name, config.modules_to_save, sources)
    model.peft_config[adapter_name] = config
    logger.info("Added adapter '%s' = mix of %s with weights %s", adapter_name, adapters, weights)


def _layer_plans(model, adapters: list[str]) -> list[tuple]:
    """(layer, feedforward) for every layer any of `adapters` touches; modes must agree."""
    plans = []
    for path, layer in model.ia3_layers():
        modes = {layer.feedforward[n] for n in adapters if n in layer.ia3_l}
        if len(modes) > 1:
            raise AdapterError(
                f"Module '{path}' is feedforward in some of {adapters} and not in others; "
                "vectors that scale inputs and outputs cannot be mixed. Mix adapters with the "
                "same feedforward_modules."
            )
        if modes:
            plans.append((layer, modes.pop()))
    return plans


def _saved_module_sources(model, adapters: list[str]) -> dict:
    """path -> the trained copy the mix inherits; two adapters may not both own one."""
    sources = {}
    for path, module in model.saved_modules():
        owners = [n for n in adapters if n in module.modules_to_save]
        if len(owners) > 1:
            raise AdapterError(
                f"Adapters {owners} each have their own copy of '{path}' (modules_to_save); "
                "a mix can inherit only one. Mix adapters whose saved modules differ."
            )
        if owners:
            sources[path] = module.modules_to_save[owners[0]]
    return sources


def _union(field: str, specs: list):
    """Lists are joined (order kept, no duplicates); regexes are OR-ed; mixing both raises."""
    present = [s for s in specs if s is not None]
    if not present:
        return None
    if all(isinstance(s, str) for s in present):
        unique = list(dict.fromkeys(present))
        return unique[0] if len(unique) == 1 else "|".join(f"({s})" for s in unique)
    if all(isinstance(s, list) for s in present):
        return list(dict.fromkeys(item for s in present for item in s))
    raise AdapterError(
        f"The adapters give {field} both as a regex and as a list, which cannot be combined; "
        "mix adapters whose configs use the same form."
    )
