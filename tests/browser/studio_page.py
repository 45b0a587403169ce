"""Helpers that drive the studio's page the way a person does."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def open_studio(context, url: str):
    """A new page on the studio, ready to use."""
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.locator(".gradio-container").wait_for()
    page.locator("#intro").wait_for(timeout=60_000)
    return page


def choose(page, elem_id: str, option: str):
    """Pick `option` in the dropdown with `elem_id`, as a person does with the mouse."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} li[role=option][aria-label='{option}']").click()
