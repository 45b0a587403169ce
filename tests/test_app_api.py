"""The studio's API through gradio_client: enqueue -> status -> predict -> mix -> download.

A real `ia3 studio` with one worker process trains two tiny GPT-2 adapters (rank
classification, so they have no heads and can be mixed) in a few seconds each.
"""

import time
import zipfile

import pytest
import torch
from gradio_client import Client, handle_file
from studio_support import JOB_TIMEOUT_S, running_studio, wait_done
from train_models import save_tiny, write_instructions, write_sentiment
from transformers import AutoModelForCausalLM
from waiting import wait_for


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    with running_studio(tmp_path_factory.mktemp("api-studio")) as running:
        yield running


@pytest.fixture(scope="module")
def client(studio):
    return Client(studio.url, verbose=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return save_tiny("gpt2", folder / "gpt2"), write_sentiment(folder / "reviews.csv", n=48)


@pytest.fixture(scope="module")
def trained(client, studio, tiny):
    model, data = tiny
    ids = []
    for seed in (0, 1):
        spec = {
            "model": model,
            "steps": 6,
            "eval_every": 3,
            "batch_size": 8,
            "seed": seed,
            "name": f"tiny-{seed}",
        }
        ids.append(client.predict(spec, handle_file(data), None, api_name="/enqueue"))
    return [wait_done(client, job_id, studio) for job_id in ids]


def test_enqueue_returns_a_job_that_finishes_with_an_adapter_and_a_log(client, trained):
    first = trained[0]
    assert first["total_steps"] == 6 and first["step"] == 6
    assert first["adapter_id"] is not None
    log = client.predict(first["id"], 50, api_name="/job_log")
    assert any(line.split(" ", 1)[1].startswith("finished") for line in log)
    curves = client.predict(first["id"], api_name="/job_curves")
    assert {p["series"] for p in curves["loss"]} >= {"train loss"}
    listed = client.predict("", 50, api_name="/list_jobs")
    assert {j["id"] for j in listed} >= {t["id"] for t in trained}


def test_compare_jobs_puts_both_runs_side_by_side_with_links_to_their_adapters(client, trained):
    ids = [t["id"] for t in trained]
    found = client.predict(ids + ids[:1], api_name="/compare_jobs")  # a repeat counts once
    assert found["jobs"] == ids
    assert {f"#{i} train loss" for i in ids} <= {p["series"] for p in found["curves"]}
    assert {row[0]: row[1:] for row in found["settings"]["rows"]}["seed"] == ["0", "1"]
    assert [row[3] for row in found["metrics"]["rows"]] == [f"#{t['adapter_id']}" for t in trained]
    assert [link["url"] for link in found["links"]] == [
        f"/adapters/{t['adapter_id']}" for t in trained
    ]


def test_predict_shows_the_base_and_each_adapter_side_by_side(client, trained):
    ids = [t["adapter_id"] for t in trained]
    result = client.predict("the movie was very good", ids, True, api_name="/predict")
    assert result["task"] == "classify"
    assert [a["id"] for a in result["adapters"]] == ids
    for output in [result["base"], *result["adapters"]]:
        assert set(output["probs"]) == {"negative", "positive"}
        assert output["label"] in output["probs"]
        assert sum(output["probs"].values()) == pytest.approx(1.0, abs=1e-4)


def test_mix_answers_with_the_same_labels(client, trained):
    ids = [t["adapter_id"] for t in trained]
    result = client.predict("the food was awful", ids, [0.5, 0.5], api_name="/mix")
    assert set(result["probs"]) == {"negative", "positive"}
    assert result["weights"] == {f"#{ids[0]}": 0.5, f"#{ids[1]}": 0.5}


def test_download_gives_a_peft_zip_and_single_files(client, trained):
    adapter_id = trained[0]["adapter_id"]
    info = client.predict(adapter_id, api_name="/adapter_info")
    assert info["name"] == "tiny-0" and "adapter_model.safetensors" in info["files"]
    path = client.predict(adapter_id, api_name="/download_adapter")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    single = client.predict(adapter_id, "adapter_config.json", api_name="/download_adapter_file")
    assert '"peft_type": "IA3"' in open(single).read()


def test_bad_requests_come_back_as_messages_naming_the_problem(client, tiny):
    model, data = tiny
    with pytest.raises(Exception, match="steps"):
        client.predict({"model": model, "steps": 0}, handle_file(data), None, api_name="/enqueue")
    with pytest.raises(Exception, match="#?999999"):
        client.predict(999999, api_name="/job_status")
    with pytest.raises(Exception, match="input is empty"):
        client.predict("  ", [1], True, api_name="/predict")


def test_export_merged_gives_a_plain_model_with_the_adapter_built_in(
    client, trained, tiny, tmp_path
):
    path = client.predict(trained[0]["adapter_id"], api_name="/export_merged")
    with zipfile.ZipFile(path) as archive:
        assert "config.json" in archive.namelist()
        archive.extractall(tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny[0])
    changed = [
        name
        for name, weight in merged.state_dict().items()
        if not torch.equal(weight, base.state_dict()[name])
    ]
    assert changed and all(".attn." in name or ".mlp." in name for name in changed)


def test_import_rename_and_delete_an_adapter(client, trained, tiny):
    zipped = client.predict(trained[1]["adapter_id"], api_name="/download_adapter")
    imported = client.predict(handle_file(zipped), tiny[0], "copy", api_name="/import_adapter")
    assert client.predict(imported, api_name="/adapter_info")["name"] == "copy"
    renamed = client.predict(imported, "copy-renamed", api_name="/rename_adapter")
    assert renamed["name"] == "copy-renamed"
    found = client.predict("renamed", "", "", api_name="/list_adapters")
    assert [a["id"] for a in found] == [imported]
    assert client.predict(imported, api_name="/delete_adapter") == imported
    with pytest.raises(Exception, match=str(imported)):
        client.predict(imported, api_name="/adapter_info")


def test_cancel_stops_a_job_and_retry_queues_it_again(client, studio, trained, tiny):
    model, data = tiny
    spec = {"model": model, "steps": 5000, "eval_every": 0, "batch_size": 8}
    job_id = client.predict(spec, handle_file(data), None, api_name="/enqueue")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    wait_for(
        lambda: client.predict(job_id, api_name="/job_status")["step"] is not None,
        JOB_TIMEOUT_S,
        lambda: f"job {job_id}'s first step:\n{studio.log_tail()}",
        poll_s=0.3,
    )
    assert client.predict(job_id, api_name="/cancel_job")["cancel_requested"] is True

    def stopped():
        job = client.predict(job_id, api_name="/job_status")
        return job if job["status"] != "running" else None

    job = wait_for(
        stopped,
        deadline - time.monotonic(),  # the two waits share one time limit
        lambda: f"job {job_id} to stop after the cancel:\n{studio.log_tail()}",
        poll_s=0.3,
    )
    assert job["status"] == "cancelled" and job["step"] < 5000
    again = client.predict(job_id, api_name="/retry_job")
    assert client.predict(again, api_name="/job_status")["status"] in ("queued", "running")
    client.predict(again, api_name="/cancel_job")  # leave the worker free


def test_a_generation_adapter_answers_with_text_beside_the_base(client, studio, tiny, tmp_path):
    data = write_instructions(tmp_path / "echo.jsonl", n=24)
    spec = {"model": tiny[0], "task": "generate", "steps": 4, "eval_every": 0, "batch_size": 8}
    job = wait_done(
        client, client.predict(spec, handle_file(data), None, api_name="/enqueue"), studio
    )
    result = client.predict(
        "Say it again : the food was good", [job["adapter_id"]], True, api_name="/predict"
    )
    assert result["task"] == "generate"
    assert isinstance(result["base"]["text"], str)
    assert isinstance(result["adapters"][0]["text"], str)
