"""Compatibility with the real `peft` package (a black-box oracle, never used by the engine).

Adapters go both ways between PEFT and us with identical outputs; parameter counts, the
printed summary line and the safetensors key names are PEFT's.
"""

import json

import pytest
import torch
from safetensors import safe_open
from tiny_models import TRANSFORMERS, token_batch

from ia3engine.config import IA3Config
from ia3engine.model import get_ia3_model, load_ia3_model

peft = pytest.importorskip("peft")

CASES = [("bert", "SEQ_CLS"), ("gpt2", "CAUSAL_LM"), ("llama", "CAUSAL_LM"), ("t5", "SEQ_2_SEQ_LM")]
IDS = [name for name, _ in CASES]


def _logits(model, name):
    with torch.no_grad():
        return model(**token_batch(name)).logits


def _perturb_saved_copies(model):
    """Make the modules_to_save copies differ from the originals, so loading them matters."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if ".modules_to_save." in key:
                param.add_(torch.randn(param.shape, generator=gen))


def _ours(name, task, init=False):
    return get_ia3_model(TRANSFORMERS[name](), IA3Config(task_type=task, init_ia3_weights=init))


def _peft(name, task, init=False):
    config = peft.IA3Config(task_type=task, init_ia3_weights=init)
    return peft.get_peft_model(TRANSFORMERS[name](), config)


def _keys(folder) -> dict[str, tuple]:
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt"}
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}


@pytest.mark.parametrize(("name", "task"), CASES, ids=IDS)
def test_adapter_we_save_loads_in_peft_with_same_outputs(tmp_path, name, task):
    ours = _ours(name, task)
    _perturb_saved_copies(ours)
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(TRANSFORMERS[name](), str(tmp_path)).eval()
    torch.testing.assert_close(_logits(theirs, name), _logits(ours, name), atol=1e-6, rtol=0)
    assert not torch.allclose(_logits(ours, name), _logits(TRANSFORMERS[name](), name))


@pytest.mark.parametrize(("name", "task"), CASES, ids=IDS)
def test_adapter_saved_by_peft_loads_in_ours_with_same_outputs(tmp_path, name, task):
    theirs = _peft(name, task)
    _perturb_saved_copies(theirs)
    theirs.save_pretrained(str(tmp_path))
    ours = load_ia3_model(TRANSFORMERS[name](), tmp_path)
    torch.testing.assert_close(_logits(ours, name), _logits(theirs, name), atol=1e-6, rtol=0)
    assert ours.get_nb_trainable_parameters()[0] == 0  # loaded for inference, like PEFT


@pytest.mark.parametrize(("name", "task"), CASES, ids=IDS)
def test_trainable_parameter_counts_and_summary_line_equal_peft(capsys, name, task):
    ours, theirs = _ours(name, task, init=True), _peft(name, task, init=True)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    theirs.print_trainable_parameters()
    peft_line = capsys.readouterr().out
    ours.print_trainable_parameters()
    assert capsys.readouterr().out == peft_line
    trainable = {k for k, p in ours.named_parameters() if p.requires_grad}
    theirs_trainable = {
        k.removeprefix("base_model.model.") for k, p in theirs.named_parameters() if p.requires_grad
    }
    assert {k.removeprefix("base_model.") for k in trainable} == theirs_trainable


@pytest.mark.parametrize(("name", "task"), CASES, ids=IDS)
def test_saved_files_have_peft_key_names_and_config(tmp_path, name, task):
    _ours(name, task).save_pretrained(tmp_path / "ours")
    _peft(name, task).save_pretrained(str(tmp_path / "peft"))
    assert _keys(tmp_path / "ours") == _keys(tmp_path / "peft")
    ours = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    theirs = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert set(ours) == set(theirs)
    for key in ("target_modules", "feedforward_modules", "modules_to_save"):
        assert set(ours[key] or []) == set(theirs[key] or []), key
    for key in ("inference_mode", "peft_type", "task_type", "fan_in_fan_out", "init_ia3_weights"):
        assert ours[key] == theirs[key], key
    text = (tmp_path / "ours" / "adapter_config.json").read_text()
    assert text == json.dumps(ours, indent=2, sort_keys=True)


def test_second_adapter_saved_in_subfolder_loads_in_peft(tmp_path):
    ours = _ours("llama", "CAUSAL_LM")
    ours.add_adapter("other", IA3Config(task_type="CAUSAL_LM", init_ia3_weights=False))
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "other" / "adapter_model.safetensors").is_file()
    theirs = peft.PeftModel.from_pretrained(TRANSFORMERS["llama"](), str(tmp_path))
    theirs.load_adapter(str(tmp_path / "other"), adapter_name="other")
    theirs.set_adapter("other")
    ours.set_adapter("other")
    torch.testing.assert_close(_logits(theirs, "llama"), _logits(ours, "llama"), atol=1e-6, rtol=0)
