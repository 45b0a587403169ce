"""Every adapter we save loads in PEFT (the oracle) and means there what it means here.

A seeded property test draws IA3 configs (lists of suffixes, dotted partial paths, regexes,
"all-linear", the default table, feedforward subsets by suffix, exclusions) over tiny random
models of eleven architectures, three of them outside PEFT's IA3 table (their targets come
from our structural fallback). Each adapter gets random non-one vectors, is saved, and is
loaded with `peft.PeftModel.from_pretrained` onto a fresh copy of the same base: PEFT must
wrap the same modules with the same feedforward modes and give the same outputs, and so must
our own reload.
"""

import json
import random
import re

import peft
import pytest
import tiny_models
import torch
import transformers
from peft.tuners.ia3 import IA3Layer as PeftIA3Layer
from torch import nn
from transformers.pytorch_utils import Conv1D

from ia3engine.config import IA3Config
from ia3engine.model import get_ia3_model, load_ia3_model

TINY_DECODER = dict(
    vocab_size=tiny_models.VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
)


def _causal(config):
    return transformers.AutoModelForCausalLM.from_config(config)


def _gpt_neox():
    return _causal(transformers.GPTNeoXConfig(**TINY_DECODER))


def _qwen2():
    return _causal(transformers.Qwen2Config(**TINY_DECODER, num_key_value_heads=2))


def _phi3():  # not in PEFT's IA3 table (only "phi" is): fused qkv_proj and gate_up_proj
    config = transformers.Phi3Config(
        **TINY_DECODER, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2
    )
    return _causal(config)


def _distilbert():  # not in PEFT's IA3 table
    config = transformers.DistilBertConfig(
        vocab_size=tiny_models.VOCAB,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        max_position_embeddings=64,
    )
    return transformers.AutoModelForSequenceClassification.from_config(config)


def _my_gpt():  # GPT-2's Conv1D layers under a model type no table knows
    model = tiny_models.build("gpt2")
    model.config.model_type = "my_gpt"
    return model


BUILDERS = {
    **{name: lambda name=name: tiny_models.build(name) for name in tiny_models.ARCHITECTURES},
    "gpt_neox": _gpt_neox,
    "qwen2": _qwen2,
    "phi3": _phi3,
    "distilbert": _distilbert,
    "my_gpt": _my_gpt,
}
ARCHITECTURES = sorted(BUILDERS)


class Collide(nn.Module):
    """Names PEFT's matching misreads: "fc" is a dot-suffix of "inner.fc" and a plain one of
    "xfc", so neither a list entry "fc" nor the full path "fc" selects only the top "fc"."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.inner = nn.Module()
        self.inner.fc = nn.Linear(8, 6)
        self.xfc = nn.Linear(6, 4)

    def forward(self, x):
        return self.xfc(self.inner.fc(self.fc(x)))


def build(arch: str) -> nn.Module:
    """The same freshly initialised base every time it is asked for."""
    torch.manual_seed(0)
    return (Collide() if arch == "collide" else BUILDERS[arch]()).eval()


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))]


def _suffixes(name: str, most: int) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[-k:]) for k in range(1, min(most, len(parts)) + 1)]


def _picks(spec, names: list[str]) -> list[str]:
    """What a target spec selects among `names` (PEFT's and our rule for targets)."""
    if isinstance(spec, str):
        return [n for n in names if re.fullmatch(spec, n)]
    return [n for n in names if any(n == e or n.endswith("." + e) for e in spec)]


def _draw_targets(rng: random.Random, model: nn.Module):
    """A target spec that selects only Linear/Conv1D layers (so our engine accepts it)."""
    linear = _linear_names(model)
    every = [n for n, _ in model.named_modules() if n]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
    dotted = sorted({s for n in linear for s in _suffixes(n, 2)} - set(leaves))
    while True:
        kind = rng.choice(["default", "suffixes", "dotted", "regex", "all-linear"])
        if kind == "default":
            return kind, None, linear
        if kind == "all-linear":
            return kind, "all-linear", linear
        if kind == "suffixes":
            spec = rng.sample(leaves, rng.randint(1, min(3, len(leaves))))
        elif kind == "dotted":
            spec = rng.sample(dotted, rng.randint(1, min(2, len(dotted))))
            spec += rng.sample(leaves, rng.randint(0, 1))
        else:
            alternatives = "|".join(re.escape(x) for x in rng.sample(leaves, rng.randint(1, 3)))
            layer = rng.choice(["", r"0\.", r"1\."])
            spec = (
                rf".*\.{layer}(?:.*\.)?(?:{alternatives})" if layer else rf".*\.(?:{alternatives})"
            )
            spec = rng.choice([spec, spec.replace(r".*\.(?:", "(?:.*\\.)?(?:")])
        picked = _picks(spec, every)
        if picked and set(picked) <= set(linear):
            return kind, spec, picked


def _draw_config(rng: random.Random, arch: str, model: nn.Module) -> IA3Config:
    kind, targets, picked = _draw_targets(rng, model)
    # Feedforward entries are dot-suffixes of picked modules, so each is covered by a target
    # entry (our config check); regex and "all-linear" targets also get a plain suffix that
    # is no dot-suffix ("own_proj"), which PEFT's own endswith would misread.
    pool = sorted({s for n in picked for s in _suffixes(n, 2)})
    feedforward = rng.choice([None, "subset", "subset", "plain"])
    if feedforward == "subset":
        feedforward = rng.sample(pool, rng.randint(0, min(3, len(pool))))
    elif feedforward == "plain" and not isinstance(targets, list):
        leaf = rng.choice(sorted({n.rsplit(".", 1)[-1] for n in picked}))
        feedforward = [leaf[1:], *rng.sample(pool, 1)]
    else:
        feedforward = None
    exclude = None
    if len(picked) >= 3 and rng.random() < 0.25:
        exclude = [rng.choice(picked)]
    return IA3Config(
        target_modules=targets,
        feedforward_modules=feedforward,
        exclude_modules=exclude,
        init_ia3_weights=True,
    )


def _set_random_vectors(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in model.ia3_layers():
            vector = layer.ia3_l["default"]
            vector.copy_(0.5 + torch.rand(vector.shape, generator=gen))


def _outputs(model, arch: str) -> torch.Tensor:
    with torch.no_grad():
        if arch == "collide":
            return model(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)))
        return model(**tiny_models.token_batch(arch)).logits


def _ours_modes(model) -> dict[str, bool]:
    return {name: layer.feedforward["default"] for name, layer in model.ia3_layers()}


def _peft_modes(model) -> dict[str, bool]:
    return {
        name.removeprefix("base_model.model."): module.is_feedforward
        for name, module in model.named_modules()
        if isinstance(module, PeftIA3Layer)
    }


def check_roundtrip(tmp_path, arch: str, config: IA3Config, seed: int) -> None:
    ours = get_ia3_model(build(arch), config)
    _set_random_vectors(ours, seed)
    modes = _ours_modes(ours)
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    where = (
        f"seed={seed} arch={arch} target_modules={config.target_modules!r} "
        f"feedforward_modules={config.feedforward_modules!r} "
        f"exclude_modules={config.exclude_modules!r}; saved target_modules="
        f"{saved['target_modules']!r} feedforward_modules={saved['feedforward_modules']!r}"
    )
    expected = _outputs(ours, arch)
    assert not torch.allclose(expected, _outputs(build(arch), arch)), where
    try:
        theirs = peft.PeftModel.from_pretrained(build(arch), str(tmp_path)).eval()
    except Exception as err:
        raise AssertionError(f"PEFT cannot load the adapter: {err!r}; {where}") from err
    assert _peft_modes(theirs) == modes, where
    torch.testing.assert_close(
        _outputs(theirs, arch), expected, atol=1e-5, rtol=1e-5, msg=lambda m: f"{m}\n{where}"
    )
    reloaded = load_ia3_model(build(arch), tmp_path)
    assert _ours_modes(reloaded) == modes, where
    torch.testing.assert_close(
        _outputs(reloaded, arch), expected, atol=1e-6, rtol=0, msg=lambda m: f"{m}\n{where}"
    )


SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_drawn_config_saved_by_us_loads_in_peft_with_same_modules_and_outputs(tmp_path, seed):
    rng = random.Random(seed)
    arch = ARCHITECTURES[seed % len(ARCHITECTURES)]  # every architecture, three or four draws
    config = _draw_config(rng, arch, build(arch))
    check_roundtrip(tmp_path, arch, config, seed)


# Forms that saved but did not load in PEFT ("feedforward_modules should be a subset"), and
# forms whose full paths PEFT misreads (the saved form then falls back to exact regexes).
REPORTED = [
    (
        "llama",
        IA3Config(target_modules=["mlp.down_proj", "k_proj"], feedforward_modules=["down_proj"]),
    ),
    ("llama", IA3Config(target_modules="all-linear", feedforward_modules=["down_proj"])),
    ("my_gpt", IA3Config(target_modules=["c_attn", "c_proj"])),
    (
        "distilbert",
        IA3Config(target_modules=["q_lin", "ffn.lin2", "lin1"], feedforward_modules=["lin2"]),
    ),
    ("collide", IA3Config(target_modules=["fc", "xfc"], feedforward_modules=["fc"])),
    ("collide", IA3Config(target_modules=r"x?fc", feedforward_modules=["fc"])),
]


@pytest.mark.parametrize(("arch", "config"), REPORTED, ids=[str(i) for i in range(len(REPORTED))])
def test_reported_forms_load_in_peft(tmp_path, arch, config):
    check_roundtrip(tmp_path, arch, config, seed=0)
