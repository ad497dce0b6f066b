"""A small scriptable OpenAI-compatible server for fault and overhead tests.

It answers ``POST /v1/chat/completions`` on 127.0.0.1 with a canned reply, and can be
told, per model name, to misbehave on the next requests::

    with FaultServer() as srv:
        srv.script("m", ["429", "500", "ok"])   # two failures, then success
        backend = OpenAIBackend("m", base_url=srv.base_url)

Actions: ``ok``, ``say:TEXT`` (ok, answering TEXT), ``delay:SECONDS`` (then ok), ``429`` /
``429:RETRY_AFTER``, ``500``, ``401``, ``400``, ``hang`` (no answer until the server stops),
``malformed`` (200 with a non-JSON body), ``empty`` (200 with ``choices: []``), and hostile
upstreams: ``drip:SECONDS`` (stream one word per SECONDS), ``broken-sse`` (a first token,
then the line ``data: {oops``), ``bad-model`` (``model`` is a number), ``bad-usage``
(``usage.completion_tokens`` is ``"x"``), ``no-finish`` (a stream that ends without a finish
reason), ``length`` (finish reason ``length``), ``call:NAME:ARGS`` (a tool call of NAME with
the JSON arguments ARGS; several calls joined by ``|``; streamed as tool-call deltas),
``bad-call`` (a tool call without a function name), ``echo-key`` (401 whose message echoes
the bearer key, exact and masked, as api.openai.com does). A request may also carry the
header ``x-aft-fault: ACTION``. The server counts requests and, per model, the most in
flight at once so tests can check retries and concurrency bounds from the server's side; it
keeps each request's headers (to check which credentials reached it). Two load modes apply
to unscripted requests: ``fail_rate`` answers 500 to that share of requests at random
(seeded), and ``capacity`` answers 429 (with ``Retry-After``) to requests beyond that many
in flight for one model, as an overloaded API does; ``fail_actions`` says what a
``fail_rate`` failure is (default ``["500"]``). ``aborted`` counts answers the client left
before they were written out (a stream whose reader went away); ``stream_pause_s`` is the
pause between streamed words of unscripted answers.

``permissive=True`` makes unscripted answers (and ``ok`` / ``delay``) follow what the
request asks, as a model that always complies would (tools, JSON formats; the rule is in
:mod:`aft_sdk.testing.complying`), so a client's plumbing can be tested end to end.
``logprobs: true`` adds OpenAI-format log probabilities to text answers (scripted or not;
per chunk when streamed). A stream's first delta names the ``assistant`` role and streams
end with a ``usage`` chunk; assistant turns with ``content: null`` are accepted. As a prompt
cache, usage reports as ``cached_tokens`` the leading messages an earlier request sent.
Steps of a step-level search (``stop`` holds ``"\\n\\n"``) are answered as
:mod:`aft_sdk.testing.steps` says.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aft_sdk.testing.complying import comply, logprobs, pieces
from aft_sdk.testing.steps import is_step, step_payload


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog of 5 would make a burst of connections
    # wait for TCP's retransmit (a second) and hide the client's real concurrency.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)  # a client that left is no error


class FaultServer:
    """Scriptable OpenAI-compatible server running in a background thread.

    Args:
        delay_s: Seconds every ``ok`` answer waits before replying.
        honour_n: Return ``n`` choices when asked (``False`` mimics llama.cpp).
        port: Port to bind; 0 picks a free one.
        permissive: Answer tool and format requests as asked (see the module's notes).
    """

    def __init__(self, *, delay_s: float = 0.0, honour_n: bool = True, port: int = 0,
                 permissive: bool = False) -> None:
        self.delay_s = delay_s
        self.honour_n = honour_n
        self.permissive = permissive
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.stream_pause_s = 0.0
        self.capacity_retry_after = 0.1
        self.in_flight: dict[str, int] = defaultdict(int)
        self._fresh()
        self._httpd = _Server(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    port = property(lambda self: int(self._httpd.server_address[1]))
    base_url = property(lambda self: f"http://127.0.0.1:{self.port}/v1")

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        return self._thread.start() or self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def backend(self, model: str, **kw: Any) -> Any:
        """An ``OpenAIBackend`` for ``model`` on this server: no retries, 30 s timeout,
        unless ``kw`` says otherwise."""
        from aft_sdk.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(model, base_url=self.base_url,
                             **{"max_retries": 0, "timeout": 30, **kw})

    def script(self, model: str, actions: Iterable[str]) -> None:
        """Queues actions for the next requests naming ``model``; then ``ok`` again."""
        with self._lock:
            self._scripts[model].extend(actions)

    def reset(self) -> None:
        """Forgets scripts, counters and the prompt cache (between tests)."""
        with self._lock:
            self._fresh()

    def _fresh(self) -> None:
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.peak_in_flight: dict[str, int] = defaultdict(int)
        self.fail_rate = 0.0
        self.fail_actions: list[str] = ["500"]
        self.aborted = 0
        self.capacity: int | None = None
        self._rng = random.Random(0)
        self.rejected = 0
        self._seen: set[str] = set()
        self.step_separator, self.steps_to_finish = "\n\n", 3

    def count(self, model: str | None = None) -> int:
        """Requests received so far, for one model or all."""
        with self._lock:
            return sum(1 for r in self.requests if model is None or r.get("model") == model)

    # -- used by the handler -------------------------------------------------------

    def _next_action(self, model: str, header: str | None) -> str:
        with self._lock:
            queue = self._scripts.get(model)
            if queue:
                return queue.popleft()
            if header:
                return header
            if self.capacity is not None and self.in_flight[model] > self.capacity:
                self.rejected += 1
                return f"429:{self.capacity_retry_after}"
            if self.fail_rate and self._rng.random() < self.fail_rate:
                return self._rng.choice(self.fail_actions)
        return "ok"

    def max_in_flight(self, model: str) -> int:
        """The most requests for ``model`` that were being served at once."""
        with self._lock:
            return self.peak_in_flight.get(model, 0)

    def _enter(self, body: dict[str, Any], headers: dict[str, str]) -> int:
        """Counts the request in; returns its prompt tokens a prompt cache would hold."""
        model = str(body.get("model"))
        messages = body.get("messages") or []
        prefixes = {k: json.dumps(messages[:k], sort_keys=True)
                    for k in range(max(1, len(messages) - 64), len(messages))}
        with self._lock:
            hit = max((k for k, p in prefixes.items() if p in self._seen), default=0)
            if len(self._seen) > 100_000:  # a long soak: forget, as a cache evicts
                self._seen = set()
            self._seen.update(prefixes.values())
            self.requests.append(body)
            self.headers.append(headers)
            self.in_flight[model] += 1
            self.peak_in_flight[model] = max(self.peak_in_flight[model], self.in_flight[model])
        return sum(_words(str(m.get("content") or "")) for m in messages[:hit])

    def _leave(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.in_flight[str(body.get("model"))] -= 1

    def reply_text(self, body: dict[str, Any], index: int) -> str:
        """The canned answer: names the model, the choice index and the last user turn."""
        last = next(
            (m.get("content", "") for m in reversed(body.get("messages", []))
             if m.get("role") == "user"),
            "",
        )
        seed = body.get("seed")
        return f"answer {index} from {body.get('model')} (seed {seed}) to: {str(last)[:60]}"


def _words(text: str) -> int:
    return len(text.split())


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _finished(self) -> None:
            # A request stops counting as in flight when its answer starts going out: the
            # client may send its next request as soon as it reads the status line.
            if getattr(self, "_body", None) is not None:
                server._leave(self._body)
                self._body = None

        def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            self._finished()
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": "fault", "object": "model"}]})
            else:
                self._send(200, {"status": "ok"})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "body is not JSON"}})
                return
            self._cached = server._enter(body, {k.lower(): v for k, v in self.headers.items()})
            self._body = body
            try:
                self._answer(body)
            except (BrokenPipeError, ConnectionResetError):
                with server._lock:  # the client gave up (timeout, disconnect)
                    server.aborted += 1
            finally:
                self._finished()

        def _answer(self, body: dict[str, Any]) -> None:
            action = server._next_action(str(body.get("model")), self.headers.get("x-aft-fault"))
            kind, _, arg = action.partition(":")
            if kind == "hang":
                server._stop.wait(float(arg) if arg else 3600)
                return
            if kind in ("429", "500", "401", "400"):
                headers = {"retry-after": arg or "0"} if kind == "429" else {}
                self._send(int(kind), {"error": {"message": f"scripted {kind}"}}, headers)
                return
            if kind == "malformed":
                self._send(200, b"this is not json {")
                return
            if kind == "empty":
                self._send(200, _completion(body, [], self._cached))
                return
            if kind == "echo-key":
                key = self.headers.get("authorization", "").partition(" ")[2]
                masked = key[:4] + "*" * max(0, len(key) - 8) + key[-4:]
                self._send(401, {"error": {"message": f"Incorrect API key provided: {masked}. "
                                           f"(Authorization: Bearer {key})"}})
                return
            time.sleep(float(arg) if kind == "delay" else server.delay_s)
            if kind in ("call", "bad-call"):
                self._calls(body, _scripted_calls(arg, bad=kind == "bad-call"))
                return
            top = body.get("top_logprobs")
            if top is not None and (type(top) is not int or not 0 <= top <= 20):
                self._send(400, {"error": {"message": "top_logprobs must be 0..20"}})
                return
            complied = comply(body) if server.permissive and kind in ("ok", "delay") else None
            if isinstance(complied, list):
                self._calls(body, complied)
                return
            n = int(body.get("n") or 1) if server.honour_n else 1
            if is_step(body, server.step_separator) and kind in ("ok", "say", "delay"):
                return self._send(200, step_payload(body, n, server, arg if kind == "say" else None))
            texts = [arg if kind == "say" else complied if complied is not None
                     else server.reply_text(body, i) for i in range(n)]
            if body.get("stream"):
                self._stream(body, texts[0], kind,
                             float(arg) if kind == "drip" else server.stream_pause_s)
                return
            payload = _completion(body, texts, self._cached)
            if kind == "bad-model":
                payload["model"] = 123
            elif kind == "bad-usage":
                payload["usage"]["completion_tokens"] = "x"
            for choice, text in zip(payload["choices"], texts):
                choice["finish_reason"] = ("length" if kind == "length" else "stop")
                if body.get("logprobs"):
                    choice["logprobs"] = logprobs(pieces(text), top or 0)
            self._send(200, payload)

        def _stream(self, body: dict[str, Any], text: str, kind: str, pause: float) -> None:
            self._finished()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            model = 123 if kind == "bad-model" else body.get("model")
            for i, piece in enumerate(pieces(text)):
                if i and kind == "broken-sse":
                    self.wfile.write(b"data: {oops\n\n")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                choice: dict[str, Any] = {"index": 0, "delta": delta}
                if body.get("logprobs"):
                    choice["logprobs"] = logprobs([piece], body.get("top_logprobs") or 0)
                self._event(model, {"choices": [choice]})
                time.sleep(pause)
            if kind != "no-finish":
                self._event(model, {"choices": [{"index": 0, "delta": {},
                                                 "finish_reason": ("length" if kind == "length" else "stop")}]})
            usage = _usage(body, [text], self._cached)
            if kind == "bad-usage":
                usage["completion_tokens"] = "x"
            self._event(model, {"choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

        def _calls(self, body: dict[str, Any], calls: list[dict[str, Any]]) -> None:
            """Answers with ``calls``; streamed, each call's name and id come in its first
            chunk only, its arguments in two pieces."""
            if not body.get("stream"):
                payload = _completion(body, [""], self._cached)
                payload["choices"][0].update(finish_reason="tool_calls", message={
                    "role": "assistant", "content": None, "tool_calls": calls})
                self._send(200, payload)
                return
            self._finished()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            model = body.get("model")
            for i, c in enumerate(calls):  # the name first, the arguments in two pieces
                args = c["function"]["arguments"]
                name = {"name": c["function"]["name"]} if "name" in c["function"] else {}
                head = {"index": i, "id": c["id"], "type": "function",
                        "function": {**name, "arguments": args[:len(args) // 2]}}
                tail = {"index": i, "function": {"arguments": args[len(args) // 2:]}}
                for part in (head, tail):
                    delta = {"role": "assistant"} if part is head and i == 0 else {}
                    self._event(model, {"choices": [{"index": 0, "delta": {
                        **delta, "tool_calls": [part]}}]})
            self._event(model, {"choices": [{"index": 0, "delta": {},
                                             "finish_reason": "tool_calls"}]})
            self._event(model, {"choices": [], "usage": _usage(body, [""], self._cached)})
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

        def _event(self, model: Any, part: dict[str, Any]) -> None:
            chunk = {"id": "fault", "object": "chat.completion.chunk", "created": 0,
                     "model": model, **part}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()

    return Handler


def _scripted_calls(spec: str, bad: bool = False) -> list[dict[str, Any]]:
    """The calls of a ``call:`` action (``NAME:ARGS`` joined by ``|``); ``bad``: no names."""
    calls = []
    for i, one in enumerate(spec.split("|") if spec else ["f:{}"]):
        name, _, args = one.partition(":")
        fn = {"arguments": args or "{}"} if bad else {"name": name, "arguments": args or "{}"}
        calls.append({"id": f"call_{i}_{name}", "type": "function", "function": fn})
    return calls


def _usage(body: dict[str, Any], texts: list[str], cached: int = 0) -> dict[str, Any]:
    prompt = sum(_words(str(m.get("content") or "")) for m in body.get("messages", []))
    completion = sum(_words(t) for t in texts)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": min(cached, prompt)}}


def _completion(body: dict[str, Any], texts: list[str], cached: int = 0) -> dict[str, Any]:
    return {"id": "fault-1", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "usage": _usage(body, texts, cached),
            "choices": [{"index": i, "message": {"role": "assistant", "content": t},
                         "finish_reason": "stop"} for i, t in enumerate(texts)]}
