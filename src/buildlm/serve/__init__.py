"""buildlm.serve: a model behind an OpenAI-compatible HTTP API, with a web chat page.

`create_app` builds the FastAPI app (`app`), `ServeLimits` says what a request may ask for
(`limits`), and the `Scheduler` batches every request in flight through one `Engine`
(`scheduler`). ``buildlm serve --model DIR`` runs it with uvicorn (`cli`). `admission` bounds
what all clients together may hold (requests in flight and queued, body time), `web_guard`
keeps web pages of other sites and DNS-rebound names out.
"""

from buildlm.serve.limits import ServeLimits

__all__ = ["ServeLimits", "create_app"]


def __getattr__(name: str):
    # FastAPI is imported only when the app is asked for, so `import buildlm.serve` stays light.
    if name == "create_app":
        from buildlm.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'buildlm.serve' has no attribute {name!r}")
