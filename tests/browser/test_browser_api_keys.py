"""API keys in a real browser: a signed-in person opens the Adapters tab's API keys, makes a
key (shown once), calls the HTTP API with it, revokes it, and the same call is refused."""

import re

import httpx
import pytest
from playwright.sync_api import expect
from studio_page import NEWCOMER, SERVER_PATH, sign_in, type_into

pytestmark = pytest.mark.browser


def test_a_person_makes_uses_and_revokes_a_key(signed_in_studio, browser, shots):
    page = sign_in(browser, signed_in_studio.url, *NEWCOMER)
    page.get_by_role("tab", name="Adapters").click()
    page.locator("#apikeys").get_by_text("API keys").first.click()
    name = page.locator("#apikey-name textarea, #apikey-name input").first
    expect(name).to_be_visible()
    type_into(name, "nightly script")
    page.locator("#apikey-create").click()
    expect(page.locator("#apikey-note")).to_contain_text("shown only this once")
    secret = page.locator("#apikey-secret textarea, #apikey-secret input").first
    expect(secret).to_have_value(re.compile(r"^ia3_[0-9a-f]{8}_"))
    key = secret.input_value()
    expect(page.locator("#apikey-table")).to_contain_text("nightly script")
    expect(page.locator("#apikey-table")).to_contain_text(key[:13])
    shots(page, "key-made")

    url = signed_in_studio.url.rstrip("/") + "/v1/adapters"
    answer = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200 and answer.json() == {"adapters": []}

    page.locator("#apikey-pick input").click()
    page.locator("#apikey-pick li[role=option]").first.click()
    page.locator("#apikey-revoke").click()
    expect(page.locator("#apikey-note")).to_contain_text("revoked")
    expect(page.locator("#apikey-table")).to_contain_text("revoked")
    expect(page.locator("#apikey-secret")).to_be_hidden()  # the key is never shown again
    assert not SERVER_PATH.search(page.locator("#apikeys").inner_text())
    shots(page, "key-revoked")

    answer = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 401 and "revoked" in answer.json()["error"]
