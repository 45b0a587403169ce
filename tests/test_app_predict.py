"""Predict a file through the studio's API (gradio_client on a real `ia3 studio` + worker):
queue with an adapter or the base alone, follow the job in rows, download the file."""

import json

import pandas as pd
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from studio_support import running_studio, wait_done
from train_models import save_tiny, sentiment_rows, write_sentiment


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    with running_studio(tmp_path_factory.mktemp("predict-studio")) as running:
        yield running


@pytest.fixture(scope="module")
def client(studio):
    return Client(studio.url, verbose=False)


@pytest.fixture(scope="module")
def adapter(client, studio, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model = save_tiny("gpt2", folder / "gpt2")
    data = write_sentiment(folder / "reviews.csv", n=32)
    spec = {"model": model, "steps": 4, "eval_every": 0, "batch_size": 8, "name": "tiny"}
    job = wait_done(
        client, client.predict(spec, handle_file(data), None, api_name="/enqueue"), studio
    )
    return {"id": job["adapter_id"], "model": model}


def test_a_file_is_predicted_on_the_queue_and_downloaded_in_its_format(
    client, studio, adapter, tmp_path
):
    rows = pd.DataFrame({"k": range(5), "text": [t for t, _ in sentiment_rows(5, seed=9)]})
    rows.to_parquet(tmp_path / "rows.parquet", index=False)
    job_id = client.predict(
        handle_file(str(tmp_path / "rows.parquet")), adapter["id"], "", "", api_name="/predict_file"
    )
    job = wait_done(client, job_id, studio)
    assert job["kind"] == "predict" and (job["step"], job["total_steps"]) == (5, 5)
    assert job["message"].startswith("Predicted 5 rows")
    assert job["spec"]["data"] == "rows.parquet"  # a name, never where it sits on the server
    out = pd.read_parquet(client.predict(job_id, api_name="/download_prediction"))
    assert list(out["k"]) == list(range(5)) and list(out["text"]) == list(rows["text"])
    total = out["prob_negative"] + out["prob_positive"]
    assert total.tolist() == pytest.approx([1.0] * 5, abs=1e-5)
    assert set(out["predicted_label"]) <= {"negative", "positive"}


def test_the_base_alone_generates_text(client, studio, adapter, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t, _ in sentiment_rows(3)))
    job_id = client.predict(
        handle_file(str(path)), None, adapter["model"], "prompt", api_name="/predict_file"
    )
    wait_done(client, job_id, studio)
    written = client.predict(job_id, api_name="/download_prediction")
    lines = [json.loads(line) for line in open(written)]
    assert len(lines) == 3 and all(isinstance(r["generated_text"], str) for r in lines)


def test_refusals_name_the_problem(client, adapter, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("body\nthe food was good\n")
    with pytest.raises(AppError, match="Column 'text' not found"):
        client.predict(handle_file(str(path)), adapter["id"], "", "text", api_name="/predict_file")
    with pytest.raises(AppError, match="was trained on"):
        client.predict(handle_file(str(path)), adapter["id"], "gpt2", "", api_name="/predict_file")
    with pytest.raises(AppError, match="only predict jobs have a result file"):
        client.predict(1, api_name="/download_prediction")  # job 1 trained the adapter
