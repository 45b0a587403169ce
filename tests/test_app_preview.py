"""What the Train tab shows before training: targets and counts from the model's skeleton."""

import pytest
from train_models import save_tiny

from app import preview
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
    import transformers

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


def test_uploads_are_kept_by_content_and_odd_files_refused(tmp_path):
    upload = tmp_path / "gradio-cache" / "reviews.csv"
    upload.parent.mkdir()
    upload.write_text("text,label\ngood,pos\nbad,neg\n")
    kept = preview.keep_upload(str(upload), tmp_path / "data")
    assert kept == preview.keep_upload(str(upload), tmp_path / "data")
    assert open(kept).read() == upload.read_text()
    (tmp_path / "photo.exe").write_bytes(b"MZ")
    with pytest.raises(DataError, match="photo.exe"):
        preview.keep_upload(str(tmp_path / "photo.exe"), tmp_path / "data")
