"""``aft serve``: graph configs as models behind an OpenAI-compatible API.

    aft serve --config graph.yaml [--config other.yaml ...] [--host 127.0.0.1] [--port 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from aft_sdk.errors import ConfigError


def register(sub: Any) -> None:
    """Adds ``aft serve`` to the ``aft`` subcommands."""
    p = sub.add_parser("serve", help="serve graph configs as an OpenAI-compatible API")
    p.add_argument("--config", action="append", required=True, metavar="YAML",
                   help="graph config; its name: field (or file stem) is the model id; repeat")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key-env", metavar="VAR",
                   help="environment variable holding the accepted bearer keys (comma-separated)")
    p.add_argument("--max-width", type=int, default=16, help="largest width a request may ask")
    p.add_argument("--max-depth", type=int, default=4, help="largest depth a request may ask")
    p.add_argument("--max-generations", type=int, default=80,
                   help="most generations a request's own settings may make one run cost")
    p.add_argument("--max-concurrent-runs", type=int, default=128,
                   help="runs at once; more are answered 429 with Retry-After")
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--max-body-bytes", type=int, default=25_000_000,
                   help="largest request body (413 beyond); the default fits a 15 MB image "
                        "as a data URL")
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="on shutdown, seconds to let in-flight requests finish")
    p.add_argument("--debug-ui", action="store_true",
                   help="keep the last runs and show them as pages under /debug/runs "
                        "(behind the API key; they show requests and answers)")
    p.add_argument("--debug-runs", type=int, default=100,
                   help="runs --debug-ui keeps (default 100)")
    p.add_argument("--record", metavar="DIR",
                   help="record every answered run (conversation, drafts, answer, usage) as "
                        "JSONL rows in DIR, for aft data build; enables POST /v1/feedback")
    p.add_argument("--record-max-bytes", type=int,
                   help="stop recording (with a warning) once DIR holds this many bytes")
    p.add_argument("--record-skip-header", metavar="NAME",
                   help="never record a request that carries this header")
    p.set_defaults(func=cmd_serve)


def settings_from(args: argparse.Namespace) -> Any:
    """ServeSettings from the parsed flags (keys read from the named variable)."""
    from aft_sdk.serve.app import ServeSettings

    keys: tuple[str, ...] = ()
    if args.api_key_env:
        raw = os.environ.get(args.api_key_env, "")
        keys = tuple(k.strip() for k in raw.split(",") if k.strip())
        if not keys:
            raise ConfigError(f"--api-key-env names {args.api_key_env}, which is unset or empty")
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port: use 1 to 65535")
    flags = {"max_width": "--max-width", "max_depth": "--max-depth",
             "max_generations": "--max-generations",
             "max_concurrent_runs": "--max-concurrent-runs",
             "request_timeout_s": "--request-timeout", "max_body_bytes": "--max-body-bytes",
             "debug_runs": "--debug-runs"}
    values = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in flags.items()}
    for field, flag in flags.items():  # the model checks them too; the CLI names its flag
        if values[field] <= 0:
            raise ConfigError(f"{flag} must be > 0 (got {values[field]})")
    if args.debug_runs != 100 and not args.debug_ui:
        raise ConfigError("--debug-runs goes with --debug-ui")
    if args.debug_ui and not keys and args.host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"--debug-ui shows every request's conversation: on --host "
                          f"{args.host} it needs --api-key-env (without a key it is allowed "
                          "on 127.0.0.1 only)")
    if args.record_max_bytes is not None and args.record_max_bytes <= 0:
        raise ConfigError(f"--record-max-bytes must be > 0 (got {args.record_max_bytes})")
    if (args.record_max_bytes or args.record_skip_header) and not args.record:
        raise ConfigError("--record-max-bytes and --record-skip-header go with --record DIR")
    return ServeSettings(**values, api_keys=keys, debug_ui=args.debug_ui,
                         record_dir=args.record, record_max_bytes=args.record_max_bytes,
                         record_skip_header=args.record_skip_header)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from aft_sdk.serve import load_configs
        from aft_sdk.serve.app import create_app
    except ImportError as e:
        raise ConfigError(f"aft serve needs the serve extra: pip install 'aft-sdk[serve]' ({e})") from e
    settings = settings_from(args)  # flags first: a bad port fails before any model loads
    app = create_app(load_configs(args.config), settings,
                     reload_configs=lambda: load_configs(args.config))
    print(f"aft serve: models {', '.join(app.state.models.configs)} on "
          f"http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            timeout_graceful_shutdown=args.graceful_timeout)
    try:
        _server_class(uvicorn)(config).run()
    finally:  # after the last run (or a failed start): engines end, connections close
        if app.state.recorder is not None:  # every queued row written (SIGTERM included)
            app.state.recorder.close()
        from aft_sdk.aio import run_sync
        from aft_sdk.backends.factory import aclose_shared

        run_sync(aclose_shared())
    return 0


def _server_class(uvicorn: Any) -> Any:
    class Server(uvicorn.Server):  # type: ignore[misc, name-defined]
        """uvicorn's server; runs that outlast the graceful timeout are cancelled by it,
        and then get a moment to end their streams with an error event and ``[DONE]``
        (uvicorn alone exits before a cancelled task runs again)."""

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets=sockets)
            if self.server_state.tasks:
                await asyncio.wait(list(self.server_state.tasks), timeout=5)

    return Server
