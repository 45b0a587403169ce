"""transformers' Trainer on an IA3Model (ia3engine.hf_trainer.IA3Trainer): two steps on a tiny
Llama train the vectors only; output_dir and every checkpoint-N hold the adapter as
save_pretrained writes it (PEFT loads it) and never the base; resume and best-model loading
read the adapter back."""

import pytest
import tiny_models
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import TrainingArguments

import ia3engine
from ia3engine import IA3Config, get_ia3_model
from ia3engine.errors import AdapterError, AdapterFileError
from ia3engine.hf_trainer import IA3Trainer

ADAPTER_FILES = {"adapter_model.safetensors", "adapter_config.json"}
BASE_FILES = {
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
}


def rows(count: int = 8, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(2, tiny_models.VOCAB, (8,), generator=gen)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return out


def ia3_llama():
    return get_ia3_model(tiny_models.llama(), IA3Config(task_type="CAUSAL_LM"))


def arguments(output_dir, **changes) -> TrainingArguments:
    settings = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to=[],
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=0.1,
        save_strategy="steps",
        save_steps=1,
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    return TrainingArguments(**{**settings, **changes})


def vectors(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def saved(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One two-step run with the Trainer's defaults (remove_unused_columns=True included)."""
    out = tmp_path_factory.mktemp("run")
    model = ia3_llama()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = IA3Trainer(model=model, args=arguments(out), train_dataset=rows())
    trainer.train()
    trainer.save_model()
    return model.eval(), out, before


def test_two_steps_train_the_vectors_and_leave_the_base(trained):
    model, _, before = trained
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    assert trainable and all(".ia3_l." in k for k in trainable)
    for name, param in model.named_parameters():
        if name in trainable:
            assert not torch.equal(param, before[name]), f"{name} did not train"
        else:
            assert torch.equal(param, before[name]), f"base weight {name} changed"


def test_output_dir_and_checkpoints_hold_only_the_adapter(trained, tmp_path):
    model, out, _ = trained
    folders = [out, out / "checkpoint-1", out / "checkpoint-2"]
    for folder in folders:
        names = {p.name for p in folder.iterdir()}
        assert ADAPTER_FILES <= names, f"{folder}: {sorted(names)}"
        assert not names & BASE_FILES, f"{folder} holds the base: {sorted(names & BASE_FILES)}"
    # exactly what save_pretrained writes, and a checkpoint per step
    model.save_pretrained(tmp_path)
    reference = saved(tmp_path)
    for folder in (out, out / "checkpoint-2"):
        ours = saved(folder)
        assert ours.keys() == reference.keys()
        assert all(torch.equal(ours[k], reference[k]) for k in reference)
        assert (folder / "adapter_config.json").read_text() == (
            tmp_path / "adapter_config.json"
        ).read_text()
    first = saved(out / "checkpoint-1")
    assert any(not torch.equal(first[k], reference[k]) for k in reference)


def test_peft_loads_the_saved_adapter_with_the_same_outputs(trained):
    model, out, _ = trained
    theirs = PeftModel.from_pretrained(tiny_models.llama(), str(out)).eval()
    batch = tiny_models.token_batch("llama")
    with torch.no_grad():
        torch.testing.assert_close(theirs(**batch).logits, model(**batch).logits)


def test_resume_from_a_checkpoint_loads_the_adapter(trained, tmp_path):
    model, out, _ = trained
    resumed = ia3_llama()
    trainer = IA3Trainer(model=resumed, args=arguments(tmp_path), train_dataset=rows())
    trainer.train(resume_from_checkpoint=str(out / "checkpoint-1"))
    assert trainer.state.global_step == 2
    # step 2 from checkpoint-1's vectors (and optimizer, RNG) lands where the first run did
    torch.testing.assert_close(vectors(resumed), vectors(model))
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint-2"}


def test_resume_from_a_folder_without_the_adapter_says_so(tmp_path):
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "checkpoint-1" / "model.safetensors").write_bytes(b"")
    trainer = IA3Trainer(model=ia3_llama(), args=arguments(tmp_path), train_dataset=rows())
    with pytest.raises(AdapterFileError, match="no adapter_model.safetensors"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))


def test_evaluation_loss_and_the_best_adapter_at_the_end(tmp_path):
    model = ia3_llama()
    args = arguments(
        tmp_path,
        eval_strategy="steps",
        eval_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        greater_is_better=True,  # "best" is the first checkpoint once the loss falls
        learning_rate=2.0,
    )
    trainer = IA3Trainer(model=model, args=args, train_dataset=rows(), eval_dataset=rows(4, 1))
    trainer.train()
    losses = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    assert len(losses) == 2  # the loss comes from the base's labels
    assert losses[1] < losses[0]
    assert trainer.state.best_model_checkpoint == str(tmp_path / "checkpoint-1")
    # the vectors were read back from checkpoint-1 after step 2 had moved them on
    live = {  # IA3Model's parameter names -> PEFT's keys in the file
        "base_model.model." + k.removeprefix("base_model.").replace(".default", ""): v
        for k, v in vectors(model).items()
    }
    first, last = saved(tmp_path / "checkpoint-1"), saved(tmp_path / "checkpoint-2")
    assert live.keys() == first.keys()
    assert all(torch.equal(live[k], first[k]) for k in first)
    assert any(not torch.equal(last[k], first[k]) for k in first)


def test_a_classifier_trains_and_saves_its_new_head(tmp_path):
    """SEQ_CLS: the head's adapter copy trains beside the vectors and is saved with them."""
    model = get_ia3_model(tiny_models.bert(), IA3Config(task_type="SEQ_CLS"))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    data = [{**row, "labels": i % 2} for i, row in enumerate(rows())]
    IA3Trainer(model=model, args=arguments(tmp_path), train_dataset=data).train()
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    assert changed == trainable
    assert any("classifier" in k for k in trainable)
    model.eval()
    theirs = PeftModel.from_pretrained(tiny_models.bert(), str(tmp_path / "checkpoint-2")).eval()
    batch = tiny_models.token_batch("bert")
    with torch.no_grad():
        torch.testing.assert_close(theirs(**batch).logits, model(**batch).logits)


def test_a_base_with_tied_embeddings_saves(tmp_path):
    """The whole state dict of a tied base cannot go to safetensors (shared memory); the adapter
    can."""
    base = tiny_models.build("llama", tie_word_embeddings=True)
    model = get_ia3_model(base, IA3Config(task_type="CAUSAL_LM"))
    IA3Trainer(model=model, args=arguments(tmp_path, max_steps=1), train_dataset=rows()).train()
    assert ADAPTER_FILES <= {p.name for p in (tmp_path / "checkpoint-1").iterdir()}


def test_the_package_face_names_it():
    assert ia3engine.IA3Trainer is IA3Trainer


def test_refuses_a_model_without_adapters(tmp_path):
    with pytest.raises(AdapterError, match="get_ia3_model"):
        IA3Trainer(model=tiny_models.llama(), args=arguments(tmp_path), train_dataset=rows())


def test_gradient_checkpointing_trains_every_vector(tmp_path):
    """Trainer turns checkpointing on through the model (forwarded to the base): every
    vector still gets a gradient through the recomputed blocks."""
    model = ia3_llama()
    before = vectors(model)
    args = arguments(tmp_path, gradient_checkpointing=True, save_strategy="no")
    IA3Trainer(model=model, args=args, train_dataset=rows()).train()
    assert model.base_model.is_activation_checkpointing
    after = vectors(model)
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"vectors with no update under checkpointing: {unchanged}"
