"""Task heads: a model wrapped for a PEFT task type trains and saves that task's new head.

PEFT (the oracle) adds classifier/score for SEQ_CLS and TOKEN_CLS and qa_outputs for
QUESTION_ANS to modules_to_save; ours must pick the same modules, save them under PEFT's key
names, and give adapters PEFT loads with the same outputs.
"""

import pytest
import tiny_models as tm
import torch
from safetensors import safe_open
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from ia3engine.config import TASK_TYPES, IA3Config
from ia3engine.model import get_ia3_model, load_ia3_model

peft = pytest.importorskip("peft")

# task type -> (architecture, auto class) of a tiny model PEFT wraps for that task
TASK_MODELS = {
    "SEQ_CLS": ("llama", AutoModelForSequenceClassification),
    "TOKEN_CLS": ("bert", AutoModelForTokenClassification),
    "QUESTION_ANS": ("bert", AutoModelForQuestionAnswering),
    "CAUSAL_LM": ("gpt2", AutoModelForCausalLM),
    "SEQ_2_SEQ_LM": ("t5", AutoModelForSeq2SeqLM),
    "FEATURE_EXTRACTION": ("bert", AutoModel),
}
# (architecture, auto class, task type, the head PEFT trains and saves)
HEAD_CASES = [
    ("bert", AutoModelForTokenClassification, "TOKEN_CLS", "classifier"),
    ("llama", AutoModelForTokenClassification, "TOKEN_CLS", "score"),
    ("bert", AutoModelForQuestionAnswering, "QUESTION_ANS", "qa_outputs"),
    ("llama", AutoModelForQuestionAnswering, "QUESTION_ANS", "qa_outputs"),
]
HEAD_IDS = [f"{arch}-{task}" for arch, _, task, _ in HEAD_CASES]


def _tiny(arch: str, auto_class):
    config_class, _, sizes = tm.ARCHITECTURES[arch]
    torch.manual_seed(0)
    return auto_class.from_config(config_class(vocab_size=tm.VOCAB, **sizes)).eval()


def _outputs(model, arch: str) -> torch.Tensor:
    """Every logit the task model returns (QA: start and end), as one tensor."""
    with torch.no_grad():
        out = model(**tm.token_batch(arch))
    if "start_logits" in out:
        return torch.cat([out.start_logits, out.end_logits], dim=-1)
    return out.logits


def _trainable(model, prefix: str) -> set[str]:
    """Trainable parameter names below the base model (prefix: the wrapper's part)."""
    return {n.removeprefix(prefix) for n, p in model.named_parameters() if p.requires_grad}


def _file_keys(folder) -> set[str]:
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as handle:
        return set(handle.keys())


def test_every_peft_task_type_saves_the_modules_peft_saves():
    assert set(TASK_MODELS) == set(TASK_TYPES)
    for task, (arch, auto_class) in TASK_MODELS.items():
        ours = get_ia3_model(_tiny(arch, auto_class), IA3Config(task_type=task))
        theirs = peft.get_peft_model(_tiny(arch, auto_class), peft.IA3Config(task_type=task))
        ours_saved = set(ours.peft_config["default"].modules_to_save or [])
        assert ours_saved == set(theirs.peft_config["default"].modules_to_save or []), task
        assert {n for n, _ in ours.saved_modules()} == set(theirs.modules_to_save or []) & {
            n for n, _ in _tiny(arch, auto_class).named_children()
        }, task


@pytest.mark.parametrize(("arch", "auto_class", "task", "head"), HEAD_CASES, ids=HEAD_IDS)
def test_task_head_trains_saves_under_peft_keys_and_loads_in_peft(
    tmp_path, arch, auto_class, task, head
):
    ours = get_ia3_model(_tiny(arch, auto_class), IA3Config(task_type=task))
    theirs = peft.get_peft_model(_tiny(arch, auto_class), peft.IA3Config(task_type=task))
    trainable = _trainable(ours, "base_model.")
    assert trainable == _trainable(theirs, "base_model.model.")
    assert f"{head}.modules_to_save.default.weight" in trainable

    # one step of training moves the head's copy (and leaves the original alone)
    optimizer = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=1.0)
    ours.train()
    out = ours(**tm.token_batch(arch))
    logits = out.start_logits if "start_logits" in out else out.logits
    (logits**2).mean().backward()
    optimizer.step()
    ours.eval()
    saved = ours.base_model.get_submodule(head)
    assert not torch.equal(saved.modules_to_save["default"].weight, saved.original_module.weight)

    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(str(tmp_path / "peft"))
    assert _file_keys(tmp_path / "ours") == _file_keys(tmp_path / "peft")
    assert f"base_model.model.{head}.weight" in _file_keys(tmp_path / "ours")

    loaded_in_peft = peft.PeftModel.from_pretrained(_tiny(arch, auto_class), str(tmp_path / "ours"))
    expected = _outputs(ours, arch)
    torch.testing.assert_close(_outputs(loaded_in_peft.eval(), arch), expected, atol=1e-6, rtol=0)
    assert not torch.allclose(expected, _outputs(_tiny(arch, auto_class), arch))
    reloaded = load_ia3_model(_tiny(arch, auto_class), tmp_path / "ours")
    torch.testing.assert_close(_outputs(reloaded, arch), expected, atol=1e-6, rtol=0)


def test_a_second_adapter_gets_its_own_head_copy():
    model = get_ia3_model(
        _tiny("bert", AutoModelForQuestionAnswering), IA3Config(task_type="QUESTION_ANS")
    )
    model.add_adapter("other", IA3Config(task_type="QUESTION_ANS"))
    assert set(model.base_model.qa_outputs.modules_to_save) == {"default", "other"}
    assert model.peft_config["other"].modules_to_save == ["qa_outputs"]
