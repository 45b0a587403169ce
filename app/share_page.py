"""The shareable page of one adapter at /adapters/{id}, and its download routes.

/adapters/{id} is a small HTML page (card, metrics, download button);
/adapters/{id}/download.zip and /adapters/{id}/files/{name} serve the files.
"""

from __future__ import annotations

import html
import logging
import re
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse

from app import adapter_actions, auth
from ia3engine.errors import IA3Error

try:  # markdown-it-py comes with gradio's dependencies, not ours
    from markdown_it import MarkdownIt
except ImportError:
    MarkdownIt = None

logger = logging.getLogger(__name__)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 860px; margin: 2rem auto; padding: 0 1rem;
       color: #1f2937; line-height: 1.5; }}
h1 {{ margin-bottom: .2rem; }} .sub {{ color: #6b7280; margin-top: 0; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
td, th {{ border-bottom: 1px solid #e5e7eb; padding: .3rem .8rem .3rem 0; text-align: left; }}
.button {{ display: inline-block; background: #4f46e5; color: #fff; padding: .6rem 1.2rem;
          border-radius: .4rem; text-decoration: none; font-weight: 600; }}
.card {{ border: 1px solid #e5e7eb; border-radius: .5rem; padding: 0 1rem; margin-top: 1rem; }}
pre {{ background: #f3f4f6; padding: .8rem; border-radius: .4rem; overflow-x: auto; }}
</style></head><body>
{body}
</body></html>"""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "adapter"


def _render_markdown(text: str) -> str:
    """The model card as HTML (front matter dropped); escaped text if no renderer exists."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text or "", flags=re.S)
    text = re.sub(r"\A\s*# [^\n]*\n", "", text)  # the page has the title already
    if MarkdownIt is None:
        return f"<pre>{html.escape(text)}</pre>"
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _rows(pairs) -> str:
    return "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs
    )


def adapter_page(adapter_id: int, token: str = "") -> str:
    """The HTML of one adapter's page (its links carry the share token it was opened with)."""
    info = adapter_actions.adapter_info(adapter_id)
    query = html.escape(f"?token={quote(token, safe='')}") if token else ""
    name = info.get("name") or f"adapter {adapter_id}"
    metrics = info.get("metrics") or {}
    facts = [
        ("Base model", info.get("base_model")),
        ("Task", info.get("task")),
        ("Labels", ", ".join(map(str, info.get("labels") or [])) or "—"),
        ("Trainable parameters", f"{info.get('trainable_params') or 0:,}"),
        ("Size", f"{(info.get('size_bytes') or 0) / 1024:.1f} KiB"),
        ("Created", str(info.get("created_at") or "")[:19].replace("T", " ")),
        ("sha256", info.get("sha256") or "—"),
    ]
    metric_rows = [(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in metrics.items()]
    files = "".join(
        f'<li><a href="/adapters/{adapter_id}/files/{html.escape(f)}{query}">{html.escape(f)}</a></li>'
        for f in info.get("files", [])
    )
    usage = (
        "from peft import PeftModel\n"
        f"model = PeftModel.from_pretrained(base_model, 'path/to/{_slug(name)}')"
    )
    body = f"""
<h1>{html.escape(name)}</h1>
<p class="sub">(IA)³ adapter #{adapter_id} for {html.escape(str(info.get("base_model")))}</p>
<p><a class="button" id="download-zip" href="/adapters/{adapter_id}/download.zip{query}">
Download adapter (.zip)</a></p>
<h2>Facts</h2><table>{_rows(facts)}</table>
<h2>Metrics</h2>{f"<table>{_rows(metric_rows)}</table>" if metric_rows else "<p>None recorded.</p>"}
<h2>Files</h2><ul>{files}</ul>
<h2>Use it</h2><pre>{html.escape(usage)}</pre>
<div class="card">{_render_markdown(info.get("card") or "")}</div>"""
    return PAGE.format(title=html.escape(f"{name} · IA3 Studio"), body=body)


def _not_found(error: Exception) -> HTMLResponse:
    body = f"<h1>Adapter not found</h1><p>{html.escape(str(error))}</p><p><a href='/'>Studio</a>"
    return HTMLResponse(PAGE.format(title="Not found", body=body), status_code=404)


def add_routes(app: FastAPI) -> None:
    """Register the adapter page and download routes on `app` (before Gradio is mounted)."""

    @app.get("/adapters/{adapter_id}", response_class=HTMLResponse)
    def page(adapter_id: int, token: str = ""):
        try:
            with auth.share_visit(adapter_id, token):  # 404 unless shared with this token
                return HTMLResponse(adapter_page(adapter_id, token))
        except IA3Error as error:
            return _not_found(error)

    @app.get("/adapters/{adapter_id}/download.zip")
    def download_zip(adapter_id: int, token: str = ""):
        try:
            with auth.share_visit(adapter_id, token):
                info = adapter_actions.adapter_info(adapter_id)
                path = adapter_actions.adapter_zip(adapter_id)
        except IA3Error as error:
            return _not_found(error)
        filename = f"{_slug(info.get('name') or str(adapter_id))}.zip"
        return FileResponse(path, media_type="application/zip", filename=filename)

    @app.get("/adapters/{adapter_id}/files/{filename}")
    def download_file(adapter_id: int, filename: str, token: str = ""):
        try:
            with auth.share_visit(adapter_id, token):
                path = adapter_actions.adapter_file(adapter_id, filename)
        except IA3Error as error:
            return _not_found(error)
        return FileResponse(path, filename=filename)
