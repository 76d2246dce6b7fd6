"""A ten-turn conversation on the chat page with a 128-token-context model, in headless Chromium.

The context fills after two or three turns. Every message must still get its reply, with no
error on the page: the page asks the server to leave the oldest turns out ("trim_history"),
stops sending what was left out, and says so once, quietly. Without Chromium this test fails
rather than skips (CI installs it).
"""

from __future__ import annotations

import json
import os

import pytest

CHROMIUM = os.environ.get("BUILDLM_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TURNS = 10


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} not found: `apt-get install -y chromium`"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def test_ten_turns_with_a_128_token_context_all_get_replies(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    sent: list[dict] = []
    page.on(
        "request",
        lambda r: (
            sent.append(json.loads(r.post_data)) if r.url.endswith("/v1/chat/completions") else None
        ),
    )
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    assert "loading" not in page.inner_text("#model-name")  # ready means the model card is in
    assert "context 128" in page.inner_text("#model-name")
    page.fill("#seed", "7")  # sampled replies, the same every run

    for turn in range(TURNS):
        question = f"Question {turn + 1}: what did Jack Gisburn paint at the Riviera?"
        page.fill("#prompt", question)
        page.press("#prompt", "Enter")
        page.wait_for_function(
            "(n) => document.querySelectorAll(\".msg.assistant[data-done='true']\").length === n",
            arg=turn + 1,
            timeout=30_000,
        )
        reply = page.locator(".msg.assistant").last
        assert "error" not in (reply.get_attribute("class") or ""), reply.inner_text()
        assert "finish: " in reply.inner_text() and "error" not in reply.inner_text()
        assert "error" not in (page.get_attribute("#status", "class") or "")

    texts = page.locator(".msg.assistant .text").all_text_contents()
    assert len(texts) == TURNS and all(t.strip() for t in texts)  # every reply arrived
    assert page.locator(".msg.error").count() == 0
    note = page.locator("#trim-note")
    assert note.count() == 1 and "128-token context" in note.inner_text()  # said once

    # Every request asked for trimming, and the page stopped resending what was left out.
    assert len(sent) == TURNS and all(body["trim_history"] is True for body in sent)
    assert len(sent[-1]["messages"]) < 2 * TURNS - 1
    assert sent[-1]["messages"][-1]["content"].startswith(f"Question {TURNS}:")

    page.screenshot(path=str(tmp_path / "long_chat.png"), full_page=True)
    assert (tmp_path / "long_chat.png").stat().st_size > 10_000

    # New chat starts over: the next overflow is noted again.
    page.click("#reset")
    assert page.locator("#trim-note").count() == 0
    assert errors == []
    page.close()
