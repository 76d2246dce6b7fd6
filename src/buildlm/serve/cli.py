"""``buildlm serve``: an OpenAI-compatible API and a chat page for a model folder.

    buildlm serve --model runs/shakespeare            # http://127.0.0.1:8000, page at /
    buildlm serve --model runs/x --port 0             # any free port (printed on start)
    buildlm serve --model runs/x --api-key secret     # /v1 requests need the key

Then any OpenAI client works: ``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret")``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path

from buildlm.cli_parser import Parser
from buildlm.serve.limits import ServeLimits
from buildlm.serve.web_guard import WebPolicy
from buildlm.tools.calls import TOOLS


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="buildlm serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True,
        help="a run folder (newest checkpoint), a checkpoint folder or a Hugging Face model folder",
    )  # fmt: skip
    parser.add_argument(
        "--name", default=None, help="the model id clients use (default: folder name)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: loopback only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    parser.add_argument(
        "--api-key", default=os.environ.get("BUILDLM_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $BUILDLM_API_KEY; the environment "
        "keeps the key out of the process list)",
    )  # fmt: skip
    parser.add_argument(
        "--allowed-hosts", nargs="+", default=[], metavar="HOST",
        help="Host names clients may use besides loopback ones and the bound address, e.g. "
        "'mybox.lan' ('*': any; other names are refused, which stops DNS rebinding)",
    )  # fmt: skip
    parser.add_argument(
        "--cors-origin", action="append", default=[], metavar="ORIGIN",
        help="a web origin (https://app.example) whose pages may call the API (repeatable); "
        "requests from other sites' pages are refused",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU) | cpu | cuda | cuda:N | mps")
    parser.add_argument(
        "--dtype", default="auto", help="auto (the checkpoint's) | fp32 | bf16 | fp16"
    )
    parser.add_argument("--quantize", choices=["int8"], default=None, help="weight-only int8")
    parser.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    defaults = ServeLimits()
    parser.add_argument(
        "--max-prompt-tokens", type=int, default=None,
        help="longest prompt in tokens (default and ceiling: the model's context length)",
    )  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens,
                        help="most new tokens one request may ask for")  # fmt: skip
    parser.add_argument("--default-max-tokens", type=int, default=defaults.default_max_tokens,
                        help="new tokens of a chat request that names no max_tokens")  # fmt: skip
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes,
                        help="larger request bodies get 413")  # fmt: skip
    parser.add_argument("--max-n", type=int, default=defaults.max_n, help="most choices (n)")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size,
                        help="most rows decoded together")  # fmt: skip
    parser.add_argument("--max-temperature", type=float, default=defaults.max_temperature)
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections,
                        help="requests read or answered at once; more get 429")  # fmt: skip
    parser.add_argument("--max-queued", type=int, default=defaults.max_queued,
                        help="requests waiting for the model; more get 429")  # fmt: skip
    parser.add_argument("--body-timeout", type=float, default=defaults.body_timeout_s,
                        help="seconds a request body may take to arrive (then 408), and a new "
                        "connection's request head (then closed)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--tools", action="append", choices=sorted(TOOLS), default=[],
        help="a tool the model may call in every reply, as <tool>calculator: 23*58</tool>; the "
        "result is fed back and streamed as <result>1334</result> (repeatable; default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a clear error if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if isinstance(err, socket.gaierror) or err.errno == errno.EADDRNOTAVAIL:
            raise ValueError(
                f"--host {host!r} is not an address of this machine ({err.strerror}); use "
                "127.0.0.1 (this machine only) or 0.0.0.0 (every network it is on)"
            ) from None
        raise ValueError(
            f"cannot listen on {host}:{port} ({err.strerror}); pick another --port"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    limits = ServeLimits(
        max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens,
        default_max_tokens=min(args.default_max_tokens, args.max_tokens),
        max_body_bytes=args.max_body_bytes, max_n=min(args.max_n, args.max_batch_size), max_batch_size=args.max_batch_size,
        max_temperature=args.max_temperature, max_connections=args.max_connections,
        max_queued=args.max_queued, body_timeout_s=args.body_timeout,
    )  # fmt: skip
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    web = WebPolicy(allowed_hosts=[args.host, *args.allowed_hosts], cors_origins=args.cors_origin)
    import torch
    import uvicorn

    from buildlm.infer.cli_args import open_engine
    from buildlm.serve.admission import head_timeout_protocol
    from buildlm.serve.app import create_app

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # The server's own lines (a client that left mid-body, a failed generation) next to
    # uvicorn's, in its format, at the same level.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    serve_log = logging.getLogger("buildlm.serve")
    serve_log.addHandler(handler)
    serve_log.setLevel(args.log_level.upper())
    serve_log.propagate = False
    engine = open_engine(args)
    name = args.name or Path(args.model).resolve().name
    app = create_app(engine, name, limits, api_key=args.api_key, web=web, tools=args.tools)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if not _is_loopback(args.host) and args.api_key is None:
        print(f"buildlm serve: warning: listening on {args.host} without --api-key; anyone who "
              "can reach this machine can use the model", file=sys.stderr)  # fmt: skip
    print(f"buildlm serve: model {name!r} at http://{shown}:{port} (chat page at /, API at /v1)",
          flush=True)  # fmt: skip
    # No uvicorn limit_concurrency: it counts idle sockets too and answers a plain 503; the
    # app's own cap (`admission`) answers 429 with Retry-After instead.
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5,
                            http=head_timeout_protocol(limits.body_timeout_s))  # fmt: skip
    # uvicorn shuts down cleanly on Ctrl-C, then re-raises it: for a server that is a normal stop.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    print("buildlm serve: stopped", file=sys.stderr)
