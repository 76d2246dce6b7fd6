"""``buildlm chat`` in a real pseudo-terminal, typed at the way a person types.

The model has a 128-token context, the size the main training job makes: a conversation
outgrows it in two turns, so the chat must drop old turns rather than die. Ctrl-C is the byte
``\\x03`` written to the terminal, which the terminal's line discipline turns into SIGINT for
the chat, exactly as a keyboard does. The model is random (gibberish, deterministic) and big
enough (8 layers of 256) that a reply streams for a noticeable time, so a Ctrl-C sent when its
first piece shows lands in the middle of it.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# Becomes a session leader, takes the terminal as its controlling terminal (so ^C reaches it),
# then runs buildlm: what a terminal emulator does before starting a shell.
# A new session whose controlling terminal is the pty, with Ctrl-C's default action, as in a
# user's shell: a test run started in the background by a non-interactive shell inherits SIGINT
# *ignored* (POSIX), which exec keeps, and Python then never raises KeyboardInterrupt.
LAUNCH = (
    "import os, signal, sys; os.setsid(); os.close(os.open(os.ttyname(0), os.O_RDWR)); "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'buildlm', *sys.argv[1:]])"
)
PROMPT = "\n> "


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from buildlm.data.corpora import load_corpus
    from buildlm.model import GPT, ModelConfig
    from buildlm.tokenizer import Tokenizer
    from buildlm.train.checkpoint import save_checkpoint

    tok = Tokenizer.train(load_corpus("the-verdict"), 300, progress=False)
    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny", vocab_size=tok.vocab_size, context_length=128, d_model=256, n_layers=8, n_heads=4
    )
    model = GPT(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # away from the init, so replies differ from prompt to prompt
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    run = tmp_path_factory.mktemp("run")
    return save_checkpoint(run, 1, model, {"model": config.to_dict()}, tokenizer=tok)


class Terminal:
    """``buildlm *args`` on the slave side of a new pseudo-terminal; we hold the master."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *map(str, args)],
            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
        )  # fmt: skip
        os.close(slave)
        self.raw = b""

    @property
    def text(self) -> str:
        """Everything shown so far, with the terminal's CR LF line ends made plain."""
        return self.raw.decode("utf-8", "replace").replace("\r\n", "\n")

    def read_until(self, done, timeout: float = 60.0, quiet: float = 0.0) -> str:
        """Read until ``done(text)`` holds (and nothing more came for ``quiet`` seconds)."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while True:
            if done(self.text) and time.monotonic() - last >= quiet:
                return self.text
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; the terminal shows:\n{self.text[-2000:]}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.05))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the other side is closed
                    chunk = b""
                if not chunk:
                    assert done(self.text), f"the chat ended early:\n{self.text[-2000:]}"
                    return self.text
                self.raw += chunk
                last = time.monotonic()

    def prompts(self) -> int:
        return self.text.count(PROMPT) + self.text.startswith("> ")

    def wait_for_prompt(self, count: int) -> str:
        """Wait for the ``count``-th "> " prompt (at the end of the output, and staying there)."""
        return self.read_until(lambda t: self.prompts() >= count and t.endswith(PROMPT), quiet=0.3)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def exit_code(self, timeout: float = 30.0) -> int:
        with contextlib.suppress(AssertionError):  # drain until the chat closes its side
            self.read_until(lambda t: False, timeout=timeout)
        code = self.proc.wait(timeout=timeout)
        os.close(self.master)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def replies(transcript: str, questions: list[str]) -> list[str]:
    """The text between each typed question's echo and the next prompt."""
    out = []
    for q in questions:
        start = transcript.index(q + "\n") + len(q) + 1
        transcript = transcript[start:]
        out.append(transcript[: transcript.index(PROMPT)])
    return out


QUESTIONS = [
    "Hello, who are you?",
    "Tell me about the painting.",
    "Why did he stop painting?",
    "What did Mrs. Gisburn say?",
    "Where is the studio?",
]


def test_five_turns_then_ctrl_c_stops_a_reply_and_a_second_one_leaves(checkpoint):
    term = Terminal("chat", "--model", checkpoint, "--temperature", "0")
    try:
        term.wait_for_prompt(1)
        for i, question in enumerate(QUESTIONS):
            term.type(question + "\r")
            term.wait_for_prompt(i + 2)
        text = term.text
        assert "error" not in text and "Traceback" not in text
        answers = replies(text, QUESTIONS)
        assert all(len(a.strip()) > 10 for a in answers), answers  # every turn got a reply
        # Five turns outgrow the context (the old chat died on the second one, its default
        # 256-token reply budget alone being twice the context); the chat says so once.
        assert text.count("(older turns dropped to fit the 128-token context)") == 1

        # Ctrl-C while a reply streams: the reply stops, the chat goes on. (After /reset the
        # prompt is short, so the reply may take ~110 tokens: a wide window to land in.)
        term.type("/reset\r")
        term.wait_for_prompt(len(QUESTIONS) + 2)
        assert "(conversation reset)" in term.text
        term.type("Say something long.\r")
        before = len(term.text)
        term.read_until(lambda t: len(t) > before + len("Say something long.\n") + 3)
        term.type("\x03")
        term.wait_for_prompt(len(QUESTIONS) + 3)
        assert "(reply stopped)" in term.text[before:]
        term.type("Still there?\r")
        term.wait_for_prompt(len(QUESTIONS) + 4)
        assert len(replies(term.text, ["Still there?"])[0].strip()) > 10

        term.type("\x03")  # at the prompt: leave
        assert term.exit_code() == 0
        assert "Traceback" not in term.text and "interrupted" not in term.text
    finally:
        term.close()


def test_two_quick_ctrl_c_during_a_reply_leave_cleanly(checkpoint):
    term = Terminal("chat", "--model", checkpoint)
    try:
        term.wait_for_prompt(1)
        term.type("Hello there\r")
        term.read_until(lambda t: len(t.split("Hello there\n", 1)[-1]) > 3 and "Hello there\n" in t)
        # Two presses in one go reach the chat as one signal (signals do not queue), so the
        # second comes a moment later, while the first is still stopping the reply.
        term.type("\x03")
        time.sleep(0.1)
        term.type("\x03")
        assert term.exit_code() == 0
        assert "Traceback" not in term.text
    finally:
        term.close()


def run_seeded(checkpoint, seed: str, lines: list[str]) -> str:
    args = ["--seed", seed, "--temperature", "1.0", "--max-new-tokens", "16"]
    term = Terminal("chat", "--model", checkpoint, *args)
    try:
        term.wait_for_prompt(1)
        count = 1
        for line in lines:
            term.type(line + "\r")
            # /reset answers with a note and a new prompt too: wait for that prompt before
            # typing on, or the next line's echo races the prompt and the transcript varies.
            count += 1
            term.wait_for_prompt(count)
        term.type("/quit\r")
        assert term.exit_code() == 0
        return term.text
    finally:
        term.close()


def test_a_seed_repeats_the_whole_conversation_but_not_each_reply(checkpoint):
    lines = ["Hello", "Hello", "/reset", "Hello"]
    first = run_seeded(checkpoint, "3", lines)
    again = run_seeded(checkpoint, "3", lines)
    assert first == again  # the same session, the same transcript
    one, two, after_reset = replies(first, ["Hello", "Hello", "Hello"])
    # Each reply samples its own draws, even the same question asked again after /reset: the
    # old chat seeded every reply with the same seed, so that one repeated the first reply word
    # for word. (A reply may be empty: a random model can draw end-of-text first.)
    assert one != after_reset, (one, after_reset)
    assert len({one, two, after_reset}) == 3, (one, two, after_reset)
    other = run_seeded(checkpoint, "4", lines)
    assert other != first
    assert "(conversation reset)" in first
