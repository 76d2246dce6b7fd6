"""The chat page in a real headless Chromium (Debian's ``chromium`` package, driven by Playwright).

Typing a message must stream the reply into the page (the same text the Engine produces), fill
the token view, and draw the attention heatmap on the canvas. Without Chromium this test fails
rather than skips: CI installs it (``apt-get install -y chromium``).
"""

from __future__ import annotations

import shutil

from buildlm.infer.chat_format import chat_format_for

COUNT_INK = """(canvas) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] < 250 || data[i + 1] < 250 || data[i + 2] < 250) ink++;
  }
  return ink;
}"""
PIXELS = """(canvas) => Array.from(
  canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data).join(",")"""


def test_chromium_is_installed(browser):
    """The fixture fails (never skips) without Debian's chromium; with it, a browser runs."""
    assert browser.is_connected()


def test_chat_page_streams_a_reply_and_shows_tokens_and_attention(
    browser, server, engine, tmp_path
):
    question = "Who was Jack Gisburn?"
    fmt = chat_format_for(engine.tokenizer)
    prompt = fmt.render([{"role": "user", "content": question}], add_generation_prompt=True)
    want = engine.generate(
        [prompt], max_new_tokens=40, temperature=0, stop=fmt.stop_strings, stop_token_ids=None
    )[0]
    assert want.text

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    # A clean console: no failed request (such as a missing /favicon.ico), no logged error.
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    assert "tiny-verdict" in page.inner_text("#model-name")
    assert page.locator("#layer option").count() == 2 and page.locator("#head option").count() == 4

    page.eval_on_selector(
        "#temperature", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }"
    )
    page.fill("#max-tokens", "40")
    page.fill("#prompt", question)
    page.click("#send")

    reply = page.locator(".msg.assistant").last
    page.wait_for_selector(".msg.assistant[data-done='true']", timeout=30_000)
    assert reply.locator(".text").text_content() == want.text
    assert int(reply.get_attribute("data-chunks")) > 1  # it arrived in pieces, streamed
    assert "finish: " + want.finish_reason in reply.inner_text()
    assert page.locator(".msg.user").inner_text().endswith(question)

    # The token view: the reply split into its tokens.
    page.wait_for_selector("#tokens[data-count]", timeout=15_000)
    n_tokens = len(engine.tokenizer.encode(want.text))
    assert page.locator("#tokens .tok").count() == n_tokens
    assert page.get_attribute("#tokens", "data-count") == str(n_tokens)

    # The heatmap over the conversation: drawn, with ink on it.
    page.wait_for_selector("#heatmap[data-drawn='true']", timeout=15_000)
    canvas = page.locator("#heatmap")
    conversation = fmt.render(
        [{"role": "user", "content": question}, {"role": "assistant", "content": want.text}]
    )
    assert canvas.get_attribute("data-tokens") == str(
        min(len(engine.tokenizer.encode(conversation, allowed_special="all")), 128)
    )
    assert canvas.evaluate(COUNT_INK) > 5_000
    before = canvas.evaluate(PIXELS)
    page.select_option("#layer", "1")
    page.wait_for_function(
        "() => document.getElementById('attention-note').textContent.length > 0"
        " && document.getElementById('heatmap').dataset.drawn === 'true'"
    )
    page.wait_for_function(f"(before) => ({PIXELS})(document.getElementById('heatmap')) !== before",
                           arg=before, timeout=10_000)  # fmt: skip

    # The token view of the whole conversation shows the chat format's markup too.
    page.select_option("#token-source", "conversation")
    page.wait_for_function("() => document.querySelectorAll('#tokens .tok').length > 10")

    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, "/tmp/serve_page.png")
    assert errors == []
    page.close()
