"""What the Train tab shows before training: targets and counts from the model's skeleton."""

from pathlib import Path

import pytest
import transformers
from train_models import save_tiny

from app import job_files, preview
from ia3engine.errors import DataError, ModelLoadError


def test_minilm_preview_counts_like_peft_with_the_new_head():
    info = preview.describe_model("minilm", "classify")
    assert info["architecture"] == "BertForSequenceClassification"
    assert info["total_params"] == 22_713_986
    assert info["trainable_params"] == 16_898  # PEFT's count with a 2-label head
    assert info["head_params"] == 770
    assert len(info["targets"]) == 24
    assert sum(row["feedforward"] for row in info["targets"]) == 12


def test_preview_builds_no_weights(tmp_path, monkeypatch):
    folder = save_tiny("gpt2", tmp_path / "gpt2")
    monkeypatch.setattr(
        transformers.PreTrainedModel, "from_pretrained", classmethod(lambda *a, **k: 1 / 0)
    )
    info = preview.describe_model(folder, "generate")
    assert info["kind"] == "causal" and info["head_params"] == 0
    assert info["trainable_params"] == sum(row["params"] for row in info["targets"])


@pytest.mark.parametrize(
    ("model", "task", "words"),
    [
        ("nobody/no-such-model", "classify", "'minilm'"),
        ("minilm", "generate", "cannot generate text"),
        ("/no/such/folder", "classify", "does not exist"),
        ("", "classify", "No model given"),
    ],
)
def test_unusable_models_are_refused_with_the_fix(model, task, words):
    with pytest.raises(ModelLoadError, match=words):
        preview.describe_model(model, task)


def test_a_folder_without_a_config_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        preview.describe_model(str(tmp_path), "classify")


def test_every_shipped_sample_is_offered_without_its_eval_file():
    samples = preview.sample_datasets()
    assert {"sentiment", "intent", "instructions"} <= set(samples)
    assert preview.sample_eval_file(samples["sentiment"]).endswith("sentiment_eval.csv")
    assert not any("_eval" in path for path in samples.values())


def test_staged_uploads_go_once_queued_and_odd_files_are_refused(tmp_path):
    upload = tmp_path / "gradio-cache" / "reviews.csv"
    upload.parent.mkdir()
    upload.write_text("text,label\ngood,pos\nbad,neg\n")
    sample = preview.sample_datasets()["sentiment"]
    with job_files.staged_uploads({"data": str(upload), "eval_data": sample}, tmp_path) as staged:
        assert Path(staged["data"]).read_text() == upload.read_text()
        assert Path(staged["data"]).is_relative_to(tmp_path / "uploads")
        assert staged["eval_data"] == sample  # samples are named where they are
    assert not Path(staged["data"]).exists() and upload.exists()
    (tmp_path / "photo.exe").write_bytes(b"MZ")
    with pytest.raises(DataError, match="photo.exe"):
        preview.check_dataset_file(str(tmp_path / "photo.exe"))
