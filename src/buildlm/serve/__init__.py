"""buildlm.serve: a model behind an OpenAI-compatible HTTP API, with a web chat page.

- ``app.py``: `create_app`, the FastAPI app: routes, streaming, the page;
- ``schemas.py``: the request bodies it accepts (OpenAI's field names and types);
- ``limits.py``: `ServeLimits`, what one request may ask for;
- ``admission.py``: what all clients together may hold (requests in flight and queued, body time);
- ``web_guard.py``: keeps web pages of other sites and DNS-rebound names out (Host, Origin checks);
- ``prompts.py``: a validated request -> token ids and `SamplingParams` per choice;
- ``scheduler.py``: the `Scheduler`: every request in flight batched through one decode loop;
- ``responses.py`` / ``errors.py``: the JSON answers and errors, in OpenAI's shapes;
- ``introspect.py``: tokens and attention maps for the page;
- ``cli.py``: ``buildlm serve --model DIR``, run with uvicorn;
- ``static/``: the chat page (HTML, CSS, JavaScript).
"""

from buildlm.serve.limits import ServeLimits

__all__ = ["ServeLimits", "create_app"]


def __getattr__(name: str):
    # FastAPI is imported only when the app is asked for, so `import buildlm.serve` stays light.
    if name == "create_app":
        from buildlm.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'buildlm.serve' has no attribute {name!r}")
