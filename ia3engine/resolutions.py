"""Target resolution remembered per config, for a model that loads many adapters.

Resolving a config's targets walks and matches the whole base model (resolve_targets); every
adapter trained the same way resolves to the same modules, so an IA3Model keeps the answer per
config and forgets it whenever it changes the module tree itself (wrapping, unwrapping, saved
modules). A base model changed behind the IA3Model's back is not seen: change it through the
IA3Model, or before wrapping it.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from ia3engine.config import IA3Config
from ia3engine.targets import Target, resolve_targets, saved_module_names


class Resolutions:
    """resolve_targets and saved_module_names answers for one model, by config."""

    def __init__(self) -> None:
        self._targets: dict[str, tuple[list[tuple[str, bool, str]], IA3Config]] = {}
        self._saved: dict[str, list[str]] = {}

    def clear(self) -> None:
        """Forget everything: the model's module tree changed."""
        self._targets.clear()
        self._saved.clear()

    def targets(self, model: nn.Module, config: IA3Config) -> tuple[list[Target], IA3Config]:
        """resolve_targets(model, config); the modules are looked up again on each call (a
        target is wrapped after the first), the resolved config is a fresh copy."""
        key = repr(config)
        known = self._targets.get(key)
        if known is None:
            targets, resolved = resolve_targets(model, config)
            found = [(t.name, t.feedforward, t.layer_type) for t in targets]
            self._targets[key] = (found, resolved)
            return targets, dataclasses.replace(resolved)
        found, resolved = known
        targets = [
            Target(name=name, module=model.get_submodule(name), feedforward=ff, layer_type=kind)
            for name, ff, kind in found
        ]
        return targets, dataclasses.replace(resolved)

    def saved_names(self, model: nn.Module, spec) -> list[str]:
        """saved_module_names(model, spec)."""
        key = repr(spec)
        if key not in self._saved:
            self._saved[key] = saved_module_names(model, spec)
        return list(self._saved[key])
