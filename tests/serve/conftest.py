"""A real server on loopback for the serving tests, over a small checkpoint made here.

The checkpoint is a random tiny GPT (its text is gibberish, but deterministic) with a 300-token
BPE trained on the bundled "the-verdict" corpus. Servers run uvicorn in a background thread on a socket bound to 127.0.0.1 port 0 (the
OS picks a free port, so parallel runs never collide). Torch runs on one thread: the tensors are
tiny, and the other core is left to the clients.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    from buildlm.data.corpora import load_corpus
    from buildlm.tokenizer import Tokenizer

    tok = Tokenizer.train(load_corpus("the-verdict"), 300, progress=False)
    return make_checkpoint(tok, tmp_path_factory.mktemp("run"))


def make_checkpoint(tok, run: Path) -> Path:
    """A random tiny GPT for ``tok`` saved as a checkpoint in ``run``."""
    from buildlm.model import GPT, ModelConfig
    from buildlm.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny", vocab_size=tok.vocab_size, context_length=128, d_model=64, n_layers=2, n_heads=4
    )
    model = GPT(config)
    # Push the weights away from their init so next-token choices are clear-cut and differ from
    # prompt to prompt (a fresh init predicts nearly the same flat distribution everywhere).
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return save_checkpoint(run, 1, model, {"model": model.config.to_dict()}, tokenizer=tok)


def make_engine(checkpoint: Path):
    """An `Engine` on the checkpoint, loaded the way ``buildlm serve`` loads it."""
    from buildlm.infer.engine import Engine
    from buildlm.infer.load import load_model

    model, tokenizer = load_model(checkpoint)
    return Engine(model, tokenizer)


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread; ``url`` is its base URL."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    @property
    def scheduler(self):
        return self.app.state.scheduler

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def model_name() -> str:
    return "tiny-verdict"


@pytest.fixture(scope="session")
def start_server(checkpoint, model_name):
    """``start_server(limits, api_key=None)``: a new live server on the checkpoint (stopped at
    the end of the session)."""
    from buildlm.serve import create_app

    started: list[LiveServer] = []

    def start(limits, api_key: str | None = None, checkpoint_dir: Path | None = None,
              **options) -> LiveServer:  # fmt: skip
        engine = make_engine(checkpoint_dir or checkpoint)
        app = create_app(engine, model_name, limits, api_key=api_key, **options)
        started.append(LiveServer(app))
        return started[-1]

    yield start
    for live in started:
        live.stop()


@pytest.fixture(scope="session")
def server(start_server) -> LiveServer:
    """The main test server: no API key, generous limits for long generations."""
    from buildlm.serve import ServeLimits

    return start_server(ServeLimits(max_tokens=4096, default_max_tokens=32, max_body_bytes=200_000))


@pytest.fixture(scope="session")
def engine(checkpoint):
    """A separate engine on the same checkpoint: what the server's answers must equal."""
    return make_engine(checkpoint)


@pytest.fixture(scope="session")
def chat_checkpoints(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """One checkpoint per chat format: the same merges, with each format's special tokens."""
    from buildlm.infer.load import load_model
    from buildlm.tokenizer import Tokenizer

    _, base = load_model(checkpoint)
    specials = {
        "plain": ("<|endoftext|>",),
        "chatml": ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        "llama3": ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"),
        "gemma": ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"),
    }  # fmt: skip
    return {
        name: make_checkpoint(
            Tokenizer.from_merges(base.merges, base.pattern, tokens), tmp_path_factory.mktemp(name)
        )
        for name, tokens in specials.items()
    }


CHROMIUM = os.environ.get("BUILDLM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (never ``playwright install``)."""
    from playwright.sync_api import sync_playwright

    # A missing browser is a failure (CI installs it), never a skip.
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} not found: `apt-get install -y chromium`"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def chat_page(browser):
    """A new page at a wide viewport that records what a user would not see: ``(page, errors,
    sent)``, the page's uncaught JavaScript errors and the JSON bodies it posted to
    ``/v1/chat/completions``, in order."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    sent: list[dict] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on(
        "request",
        lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith(CHAT_PATH) else None,
    )
    return page, errors, sent


CHAT_PATH = "/v1/chat/completions"
