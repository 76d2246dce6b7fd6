""""New chat" on the chat page while a reply is still streaming, in headless Chromium.

The running request must be aborted and its reply thrown away: nothing of it may show up in the
new conversation or be sent to the model with the next message. The page must look as it did
when it loaded: the "Type a message below" hint back, the status "ready", no attention note, no
token view. Without Chromium this test fails rather than skips (CI installs it).
"""

from __future__ import annotations

# Click a button ("reset" is "New chat") the moment the next chat response's headers are in,
# before any of its body is read: the reply is certainly still streaming then, however fast the
# machine.
CLICK_AT_HEADERS = """(button) => {
  const fetchFirst = window.fetch;
  let once = true;
  window.fetch = async (...args) => {
    const response = await fetchFirst(...args);
    if (String(args[0]).endsWith("/v1/chat/completions") && once) {
      once = false;
      document.getElementById(button).click();
    }
    return response;
  };
}"""


def ask(page, text: str, replies: int) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    page.wait_for_function(
        "(n) => document.querySelectorAll(\".msg.assistant[data-done='true']\").length === n",
        arg=replies,
        timeout=30_000,
    )


def test_new_chat_while_streaming_aborts_and_starts_clean(chat_page, server):
    page, errors, sent = chat_page
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    hint = page.inner_text("#empty-hint")
    assert "Type a message below" in hint
    page.fill("#seed", "7")
    page.fill("#max-tokens", "64")

    # A first exchange fills the token view and the attention note.
    ask(page, "Who was Jack Gisburn?", 1)
    page.wait_for_function("() => document.getElementById('attention-note').textContent !== ''")
    page.wait_for_selector("#tokens .tok")

    # The second question's reply is streaming when "New chat" is pressed.
    page.evaluate(CLICK_AT_HEADERS, "reset")
    with page.expect_event("requestfailed", timeout=10_000) as failed:
        page.fill("#prompt", "What did he paint at the Riviera?")
        page.press("#prompt", "Enter")
    assert failed.value.url.endswith("/v1/chat/completions")  # aborted, not read to the end
    page.wait_for_function("() => !document.getElementById('send').disabled", timeout=10_000)
    assert page.is_disabled("#stop")
    assert page.inner_text("#status") == "ready"
    assert page.locator(".msg").count() == 0
    assert page.inner_text("#empty-hint") == hint
    assert page.inner_text("#attention-note") == ""
    assert page.locator("#tokens .tok").count() == 0 and page.inner_text("#token-count") == ""

    # The next message starts a conversation of its own: nothing of the old one is sent.
    ask(page, "Tell me about the Riviera.", 1)
    assert sent[-1]["messages"] == [{"role": "user", "content": "Tell me about the Riviera."}]
    page.wait_for_function("() => document.getElementById('attention-note').textContent !== ''")
    assert page.locator(".msg.user").all_inner_texts()[-1].endswith("Tell me about the Riviera.")
    assert page.locator(".msg").count() == 2 and page.locator("#empty-hint").count() == 0
    assert "error" not in (page.get_attribute("#status", "class") or "")

    # New chat after a reply stopped by hand: the "stopped" status does not stay either.
    page.evaluate(CLICK_AT_HEADERS, "stop")
    ask(page, "And then?", 2)
    assert "finish: stopped" in page.locator(".msg.assistant").last.inner_text()
    assert page.inner_text("#status") == "stopped"
    page.click("#reset")
    assert page.inner_text("#status") == "ready" and page.inner_text("#empty-hint") == hint
    assert errors == []
    page.close()
