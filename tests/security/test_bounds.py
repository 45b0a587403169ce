"""Bounded work, attacked through a running studio: a signed-in user tries to make one job, one
template or one imported adapter cost the studio (or its worker) unbounded memory or time.

One studio (no worker: every attack must be refused before anything is queued or loaded) with
a fake Hub cache holding only the config of a 175-billion-parameter model.
"""

from __future__ import annotations

import pytest
from adapter_builds import adapter_zip, fake_hub_model
from attack_support import refused, running_studio
from gradio_client import handle_file
from train_models import train_adapter

GIANT = "bigcorp/giant-100b"  # its config alone says ~175 billion parameters
HEAVY = "bigcorp/heavy-weights"  # a small config, but 120 GB of weights by its index


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bounds-studio")
    hf_home = tmp / "hf"
    fake_hub_model(
        hf_home,
        GIANT,
        {
            "model_type": "llama",
            "hidden_size": 12288,
            "num_hidden_layers": 96,
            "vocab_size": 50257,
            "intermediate_size": 49152,
            "torch_dtype": "bfloat16",
        },
    )
    fake_hub_model(
        hf_home,
        HEAVY,
        {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "vocab_size": 100},
        index={"metadata": {"total_size": 120 * 10**9}, "weight_map": {}},
    )
    adapter = train_adapter(tmp / "adapters" / "plain")
    with running_studio(tmp, workers=0, HF_HOME=str(hf_home)) as attacked:
        yield {"ann": attacked.client("ann"), "tmp": tmp, "adapter": adapter, "studio": attacked}


def _spec(**fields) -> dict:
    return {"model": "minilm", "data": "sentiment", "eval_every": 0, **fields}


def _queued(studio) -> list:
    return studio["ann"].predict(api_name="/list_jobs")


@pytest.mark.parametrize(
    "field, value, bound",
    [
        ("batch_size", 10**7, "4,096"),
        ("grad_accum", 10**6, "1,024"),
        ("max_length", 10**7, "32,768"),
        ("eval_every", 10**12, "1,000,000"),
        ("early_stopping_patience", 10**9, "10,000"),
        ("max_rows", 10**12, "10,000,000"),
        ("seed", 2**70, "4,294,967,295"),
    ],
)
def test_a_huge_number_in_any_spec_field_is_refused_naming_field_and_bound(
    studio, field, value, bound
):
    message = refused(studio["ann"], _spec(**{field: value}), None, None, api_name="/enqueue")
    assert f"{field} is " in message and bound in message
    assert _queued(studio) == []


def test_steps_under_the_step_limit_still_count_every_example(studio):
    # 10,000 steps is the step limit itself; x 64 x 16 is ten million examples.
    spec = _spec(steps=10_000, batch_size=64, grad_accum=16, max_length=64)
    message = refused(studio["ann"], spec, None, None, api_name="/enqueue")
    assert "IA3_MAX_EXAMPLES" in message and "10,240,000 examples" in message
    assert _queued(studio) == []


def test_one_micro_batch_too_large_for_memory_is_refused(studio):
    spec = _spec(steps=10, batch_size=512, max_length=4096)
    message = refused(studio["ann"], spec, None, None, api_name="/enqueue")
    assert "IA3_MAX_BATCH_TOKENS" in message and "Lower the batch size or max length" in message
    assert _queued(studio) == []


@pytest.mark.parametrize("slot", ["{text:>2000000}", "{text!r}", "{text.__class__}", "{text[0]}"])
def test_a_template_with_a_format_spec_or_attribute_access_is_refused(studio, slot):
    spec = _spec(steps=5, template=f"Review: {slot}")
    message = refused(studio["ann"], spec, None, None, api_name="/enqueue")
    assert slot in message and "only plain column names in braces" in message
    assert _queued(studio) == []


def test_a_model_whose_config_says_175b_parameters_is_refused_before_any_download(studio):
    message = refused(studio["ann"], _spec(model=GIANT, steps=5), None, None, api_name="/enqueue")
    assert "IA3_MAX_MODEL_PARAMS" in message and "too large for this studio" in message
    assert _queued(studio) == []
    weights = list((studio["tmp"] / "hf").rglob("*.safetensors"))
    assert weights == []  # nothing was fetched, not even tried


def test_a_model_whose_weights_are_120_gb_by_its_index_is_refused(studio):
    message = refused(studio["ann"], _spec(model=HEAVY, steps=5), None, None, api_name="/enqueue")
    assert "IA3_MAX_MODEL_GB" in message and "120.0 GB" in message
    assert _queued(studio) == []


def _adapter_names(studio) -> set[str]:
    listed = studio["ann"].predict("", "", "", api_name="/list_adapters")
    return {a["name"] for a in listed} - {"plain"}


def _import(studio, name: str, **info) -> str:
    path = adapter_zip(studio["adapter"], studio["tmp"] / f"{name}.zip", **info)
    return refused(
        studio["ann"], handle_file(str(path)), "minilm", name, api_name="/import_adapter"
    )


def test_an_imported_adapter_with_a_format_spec_template_is_refused(studio):
    message = _import(studio, "wide-template", template="{text:>2000000}", text_column="text")
    assert "training_info.json template" in message and "{text:>2000000}" in message
    assert _adapter_names(studio) == set()


def test_an_imported_adapter_with_an_attribute_reading_prompt_is_refused(studio):
    message = _import(studio, "globals-prompt", prompt="{text.__init__.__globals__}")
    assert "training_info.json prompt" in message and "attribute and index access" in message
    assert _adapter_names(studio) == set()


def test_an_imported_adapter_with_thousands_of_labels_or_a_huge_one_is_refused(studio):
    # Every label is a continuation scored per request (causal) or a row of the head.
    for labels in ([f"label-{i}" for i in range(5000)], ["down", "up" + "p" * 100_000]):
        message = _import(studio, "many-labels", labels=labels)
        assert "labels must be a list of at most 1,000 distinct names of 1 to 500" in message
    assert _adapter_names(studio) == set()


def test_an_imported_adapter_with_a_billion_token_max_length_is_refused(studio):
    message = _import(studio, "long-input", spec={"max_length": 10**9})
    assert "spec.max_length must be" in message
    assert _adapter_names(studio) == set()


def test_a_plain_adapter_still_imports_and_answers(studio):
    ann = studio["ann"]
    path = adapter_zip(studio["adapter"], studio["tmp"] / "plain.zip")
    adapter_id = ann.predict(handle_file(str(path)), "minilm", "plain", api_name="/import_adapter")
    result = ann.predict("a good film", [adapter_id], False, api_name="/predict")
    assert set(result["adapters"][0]["probs"]) == {"down", "up"}


def test_the_model_preview_refuses_the_175b_model_without_building_it(studio):
    message = refused(studio["ann"], GIANT, "classify", api_name="/describe_model")
    assert "IA3_MAX_MODEL_PARAMS" in message and "Pick a smaller model" in message


def _plain_id(studio) -> int:
    listed = studio["ann"].predict("", "", "", api_name="/list_adapters")
    return next(a["id"] for a in listed if a["name"] == "plain")


def test_a_playground_input_of_a_megabyte_is_refused(studio):
    text = "great " * 200_000
    message = refused(studio["ann"], text, [_plain_id(studio)], True, api_name="/predict")
    assert "1,200,000 characters" in message and "at most 20,000" in message


def test_comparing_or_mixing_dozens_of_adapters_at_once_is_refused(studio):
    ids = [_plain_id(studio)] * 50
    message = refused(studio["ann"], "a film", ids, True, api_name="/predict")
    assert "50 adapters in one request; pick at most 8" in message
    message = refused(studio["ann"], "a film", ids, [0.02] * 50, api_name="/mix")
    assert "50 adapters in one request; pick at most 8" in message
