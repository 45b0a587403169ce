"""The layout of a model IA3 has no table row for: layer widths, blocks, keys, values, FFNs.

Owned by the targets part: `targets.py` decides, this module describes what a model contains
(which layer types IA3 scales is wrappers.py's table).
"""

from __future__ import annotations

from torch import nn

from ia3engine.errors import UnsupportedLayerError
from ia3engine.wrappers import layer_type, unsupported_message, unwrap


def in_out_features(module: nn.Module) -> tuple[int, int]:
    """(input width, output width) of a supported layer; channels for convolutions."""
    module = unwrap(module)
    kind = layer_type(module)
    if kind == "Conv1D":
        rows, cols = module.weight.shape  # HF Conv1D stores (in, out)
        return int(rows), int(cols)
    if kind in ("Conv2d", "Conv3d"):
        return int(module.in_channels), int(module.out_channels)
    if kind is not None:
        return int(module.in_features), int(module.out_features)
    raise UnsupportedLayerError(unsupported_message("module", module))


def vector_length(module: nn.Module, feedforward: bool) -> int:
    """Length of the IA3 vector: the input width for feedforward layers, else the output."""
    fan_in, fan_out = in_out_features(module)
    return fan_in if feedforward else fan_out


# Structural detection for model types missing from the table. The IA3 paper scales keys,
# values and the input of the FFN's second matrix; these are the names models use for them.
_KEY_LEAVES = {"k", "key", "keys", "k_proj", "to_k", "wk", "w_k", "key_proj", "k_lin", "k_linear"}
_VALUE_LEAVES = {"v", "value", "values", "v_proj", "to_v", "wv", "w_v", "value_proj", "v_lin"}
_VALUE_LEAVES |= {"v_linear"}
_FUSED_LEAVES = {"c_attn", "query_key_value", "qkv", "wqkv", "qkv_proj", "w_pack", "in_proj"}
_FUSED_LEAVES |= {"to_qkv", "qkv_linear"}
_DOWN_LEAVES = {"down_proj", "fc2", "wo", "w2", "dense_4h_to_h", "fc_out", "lin2", "c_proj"}
_DOWN_LEAVES |= {"linear2", "fc_2", "ffn_out", "w_out", "dense_out", "mlp_out"}


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower()


def _in_attention(relative: str) -> bool:
    """Whether a path inside a block runs through an attention sub-module."""
    return any("att" in part.lower() for part in relative.split(".")[:-1])


def _blocks(walked: list[tuple[str, nn.Module]], kv_names: list[str]) -> list[str]:
    """Names of the repeated transformer blocks: the items of the outermost ModuleLists (or
    Sequentials) that hold key/value projections. Items without any (a head appended to a
    Sequential) are not blocks; T5's inner `layer` lists sit inside a block and are skipped."""
    blocks: list[str] = []
    for name, module in walked:
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        if any(name.startswith(b + ".") for b in blocks):
            continue
        prefix = name + "."
        held = {k[len(prefix) :].split(".", 1)[0] for k in kv_names if k.startswith(prefix)}
        blocks += [prefix + key for key, _ in module.named_children() if key in held]
    return blocks


def _block_feedforward(members: list[tuple[str, nn.Module]], block: str) -> list[str]:
    """The FFN down projection(s) in one block: by name when the name is a known one,
    otherwise by shape (the widest input narrowed to a smaller output, outside attention)."""
    outside = []
    for name, module in members:
        relative = name[len(block) + 1 :] if block else name
        if _in_attention(relative):
            continue
        fan_in, fan_out = in_out_features(module)
        outside.append((name, relative, fan_in, fan_out))
    named = [
        name
        for name, relative, fan_in, fan_out in outside
        if fan_in >= fan_out
        and (_leaf(name) in _DOWN_LEAVES or relative.lower().endswith("output.dense"))
    ]
    if named:
        return named
    narrowing = [(name, fan_in) for name, _, fan_in, fan_out in outside if fan_in > fan_out]
    widest = max((fan_in for _, fan_in in narrowing), default=0)
    return [name for name, fan_in in narrowing if fan_in == widest]


def detect_structure(
    model: nn.Module, walked: list[tuple[str, nn.Module]], heads: set[str]
) -> tuple[list[str], set[str]]:
    """Targets and feedforward names for a model the table does not know.

    Transformers: per block, the key and value projections (or the fused qkv layer when a
    block has no separate ones) plus the FFN down projection in feedforward mode. Models
    without attention (MLPs, CNNs): every scalable layer except the output head, none in
    feedforward mode (scaling outputs needs no knowledge of what feeds what).
    """
    scalable = [(n, m) for n, m in walked if layer_type(m) is not None and n not in heads]
    kv = [n for n, _ in scalable if _leaf(n) in _KEY_LEAVES | _VALUE_LEAVES]
    fused = [n for n, _ in scalable if _leaf(n) in _FUSED_LEAVES]
    blocks = _blocks(walked, kv + fused)
    if not blocks:
        if kv or fused:  # attention layers outside any ModuleList: one block, the model
            return _structure_in_block(scalable, "", kv, fused)
        names = [n for n, _ in scalable]
        if not names:  # the head is the only scalable layer: better scaled than nothing
            names = [n for n, m in walked if n in heads and layer_type(m) is not None]
        return names, set()
    members: dict[str, list[tuple[str, nn.Module]]] = {block: [] for block in blocks}
    for name, module in scalable:
        parts = name.split(".")
        block = next(
            (p for i in range(1, len(parts)) if (p := ".".join(parts[:i])) in members), None
        )
        if block is not None:
            members[block].append((name, module))
    targets: list[str] = []
    feedforward: set[str] = set()
    for block in blocks:
        block_targets, block_ff = _structure_in_block(members[block], block, kv, fused)
        targets += block_targets
        feedforward |= block_ff
    order = {n: i for i, (n, _) in enumerate(walked)}
    return sorted(targets, key=order.__getitem__), feedforward


def _structure_in_block(members, block, kv, fused) -> tuple[list[str], set[str]]:
    names = {n for n, _ in members}
    block_kv = [n for n in kv if n in names] or [n for n in fused if n in names]
    ff = _block_feedforward([(n, m) for n, m in members if n not in block_kv], block)
    chosen = set(block_kv) | set(ff)
    return [n for n, _ in members if n in chosen], set(ff)
