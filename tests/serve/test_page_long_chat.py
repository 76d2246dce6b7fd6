"""A ten-turn conversation on the chat page with a 128-token-context model, in headless Chromium.

The context fills after two or three turns. Every message must still get its reply, with no
error on the page: the page asks the server to leave the oldest turns out ("trim_history"),
stops sending what was left out (the count comes in the X-Dropped-Messages header, before any of
the body, so a reply stopped at once still has it), greys those turns out, and says so in one
quiet line that stays in view. Without Chromium this test fails rather than skips (CI installs
it).
"""

from __future__ import annotations

TURNS = 10

# Is the element in view: inside the window, and not scrolled out of the message panel?
IN_VIEW = """(el) => {
  const r = el.getBoundingClientRect();
  if (r.height === 0 || r.top < 0 || r.bottom > window.innerHeight) return false;
  const panel = el.closest("#messages");
  if (!panel) return true;
  const p = panel.getBoundingClientRect();
  return r.top >= p.top && r.bottom <= p.bottom;
}"""
AT_BOTTOM = """() => { const m = document.getElementById("messages");
  return m.scrollHeight - m.scrollTop - m.clientHeight; }"""


def test_ten_turns_with_a_128_token_context_all_get_replies(chat_page, server, tmp_path):
    page, errors, sent = chat_page
    dropped: list[int] = []
    page.on(
        "response",
        lambda r: (
            dropped.append(int(r.headers["x-dropped-messages"]))
            if r.url.endswith("/v1/chat/completions") else None
        ),
    )  # fmt: skip
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
        # The panel is scrolled to the very end, the finish line included.
        assert page.evaluate(AT_BOTTOM) <= 1

    texts = page.locator(".msg.assistant .text").all_text_contents()
    assert len(texts) == TURNS and all(t.strip() for t in texts)  # every reply arrived
    assert page.locator(".msg.error").count() == 0
    note = page.locator("#trim-note")
    assert note.count() == 1 and "128-token context" in note.inner_text()  # said once
    assert note.evaluate(IN_VIEW)  # where the user is looking, not scrolled away
    # The turns no longer sent are greyed out: exactly the oldest ones the server left out.
    assert sum(dropped) > 0
    left_out = 2 * TURNS - 1 - len(sent[-1]["messages"]) + dropped[-1]  # before, and by, the last
    greyed = page.eval_on_selector_all(
        ".msg", "els => els.map(el => el.classList.contains('dropped'))"
    )
    assert greyed == [True] * left_out + [False] * (2 * TURNS - left_out)

    # The conversation's token view shows what the model reads: never more than its context.
    page.select_option("#token-source", "conversation")
    page.wait_for_function("() => document.querySelector('#tokens .tok') !== null")
    page.wait_for_function("() => document.getElementById('token-count').textContent !== ''")
    assert 0 < page.locator("#tokens .tok").count() <= 128
    assert int(page.get_attribute("#tokens", "data-count")) <= 128

    # Every request asked for trimming, and the page stopped resending what was left out.
    assert len(sent) == TURNS and all(body["trim_history"] is True for body in sent)
    assert len(dropped) == TURNS
    for before, after, gone in zip(sent, sent[1:], dropped, strict=False):
        assert after["messages"][: len(before["messages"]) - gone] == before["messages"][gone:]
    assert len(sent[-1]["messages"]) < 2 * TURNS - 1
    assert sent[-1]["messages"][-1]["content"].startswith(f"Question {TURNS}:")

    page.screenshot(path=str(tmp_path / "long_chat.png"), full_page=True)
    assert (tmp_path / "long_chat.png").stat().st_size > 10_000

    # New chat starts over: the next overflow is noted again.
    page.click("#reset")
    assert page.locator("#trim-note").count() == 0
    assert errors == []
    page.close()


STOP_AT_HEADERS = """() => {
  // Press Stop the moment a chat response's headers are in, before any of its body is read.
  const fetchFirst = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetchFirst(...args);
    if (String(args[0]).endsWith("/v1/chat/completions")) document.getElementById("stop").click();
    return response;
  };
}"""


def test_a_reply_stopped_before_its_first_chunk_still_drops_what_the_server_left_out(
    chat_page, server
):
    page, errors, sent = chat_page
    dropped: list[int] = []
    chat = "/v1/chat/completions"
    page.on(
        "response",
        lambda r: dropped.append(int(r.headers["x-dropped-messages"])) if r.url.endswith(chat) else None,
    )  # fmt: skip
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    page.fill("#seed", "7")
    page.evaluate(STOP_AT_HEADERS)
    long = "what did Jack Gisburn paint at the Riviera, and why did he stop painting?"
    for turn in range(8):
        page.fill("#prompt", f"Question {turn + 1}: {long}")
        page.press("#prompt", "Enter")
        page.wait_for_function(
            "(n) => document.querySelectorAll(\".msg.assistant[data-done='true']\").length === n",
            arg=turn + 1,
            timeout=30_000,
        )
        assert "finish: stopped" in page.locator(".msg.assistant").last.inner_text()
        page.wait_for_function("() => !document.getElementById('send').disabled")
    assert len(dropped) == len(sent) == 8 and sum(dropped) > 0
    # What the server left out is never sent again, though no chunk of any reply was read.
    for before, after, gone in zip(sent, sent[1:], dropped, strict=False):
        assert after["messages"][: len(before["messages"]) - gone] == before["messages"][gone:]
    assert page.locator(".msg.dropped").count() == sum(dropped)
    assert errors == []
    page.close()
