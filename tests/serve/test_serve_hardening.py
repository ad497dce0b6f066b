"""``aft serve`` against unfriendly clients and upstreams: no leaked run slots, every
failure an OpenAI-style error, streamed text equal to the answer, no upstream key echoed.

The server is started as users start it (``aft serve`` in its own process); the upstream
is our fault server, told to misbehave per request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from early import slack

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi", reason="needs pip install 'aft-sdk[serve]'")

from aft_sdk.testing import LocalServer  # noqa: E402

KEY = "sk-upstream-0123456789abcdefWXYZ"
Q = [{"role": "user", "content": "hi"}]


def _config(folder: Path, name: str, base_url: str, **extra: object) -> Path:
    path = folder / f"{name}.yaml"
    backend = f"{{type: openai, model: %s, base_url: '{base_url}', api_key: {KEY}, max_retries: 0}}"
    lines = [f"name: {name}", "width: 3", "depth: 1",
             "proposers:", "  - " + backend % "p", "aggregator:", "  - " + backend % "a"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _configs(folder: Path, base_url: str) -> list[Path]:
    return [_config(folder, "pa", base_url), _config(folder, "d0", base_url, depth=0),
            _config(folder, "sel", base_url, preset="select-v1")]


@pytest.fixture(scope="module")
def served(fault_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardening")
    with LocalServer.aft_serve(_configs(folder, fault_server.base_url),
                               extra_args=["--max-concurrent-runs", "4",
                                           "--request-timeout", "20"]) as server:
        yield server


def health(server) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=5) as r:
        return json.loads(r.read())


def wait_idle(server, within: float) -> float:
    """Seconds until ``active_runs`` is 0; fails after ``within``."""
    t0, within = time.monotonic(), slack(within)
    while health(server)["active_runs"] != 0:
        assert time.monotonic() - t0 < within, f"still {health(server)} after {within}s"
        time.sleep(0.05)
    return time.monotonic() - t0


def raw_post(server, body: dict) -> socket.socket:
    """A chat request on a raw socket, so the test decides when the client leaves."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                 b"content-type: application/json\r\n"
                 + f"content-length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        part = sock.recv(4096)
        assert part, f"connection closed before {marker!r}; got {got!r}"
        got += part
    return got


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)


def sse_lines(server, body: dict) -> list[str]:
    """The data lines of a streamed answer, read to the end of the response."""
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/chat/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def test_clients_that_leave_mid_stream_free_their_slots_and_abort_upstream(served, fault) -> None:
    fault.script("a", ["drip:0.3"] * 4)  # a slowly streaming aggregator, 10+ words
    socks = [raw_post(served, {"model": "pa", "messages": Q, "stream": True})
             for _ in range(4)]
    for sock in socks:  # each reads its first token, then goes away
        read_until(sock, b'"content": "answer')
    assert health(served)["active_runs"] == 4
    for sock in socks:
        sock.close()
    wait_idle(served, within=5)
    t0 = time.monotonic()
    while fault.aborted < 4 and time.monotonic() - t0 < slack(5):  # upstream streams were cut
        time.sleep(0.05)
    assert fault.aborted == 4
    r = client(served).chat.completions.create(model="pa", messages=Q)
    assert r.choices[0].message.content.startswith("answer 0 from a")


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_before_the_first_byte_frees_its_slot_at_once(
        served, fault, stream) -> None:
    fault.delay_s = 3.0  # every upstream answer takes 3 s
    sock = raw_post(served, {"model": "pa", "messages": Q, "stream": stream})
    time.sleep(0.5)
    assert health(served)["active_runs"] == 1
    sock.close()
    assert wait_idle(served, within=1.5) < slack(1.5)  # long before the upstream would answer
    fault.delay_s = 0.0
    assert client(served).chat.completions.create(model="pa", messages=Q).choices


@pytest.mark.parametrize("action", ["bad-model", "bad-usage", "malformed"])
def test_malformed_upstream_data_is_a_json_502_naming_the_backend(served, fault, action) -> None:
    fault.script("a", [action])
    with pytest.raises(openai.APIStatusError) as err:
        client(served).chat.completions.create(model="pa", messages=Q)
    assert err.value.status_code == 502
    body = err.value.response.json()["error"]
    assert body["type"] == "upstream_error" and "openai:a@" in body["message"]
    assert "malformed" in body["message"]
    wait_idle(served, within=2)


def test_malformed_data_before_the_first_token_gets_a_status(served, fault) -> None:
    fault.script("a", ["bad-model"])  # the first chunk already names a numeric model
    with pytest.raises(openai.APIStatusError) as err:
        list(client(served).chat.completions.create(model="pa", messages=Q, stream=True))
    assert err.value.status_code == 502 and "model is int" in err.value.response.json()[
        "error"]["message"]
    wait_idle(served, within=2)


@pytest.mark.parametrize("action, what", [("broken-sse", "JSONDecodeError"),
                                          ("no-finish", "without a finish_reason"),
                                          ("bad-usage", "completion_tokens is str")])
def test_a_broken_stream_after_the_first_token_ends_with_an_error_event_and_done(
        served, fault, action, what) -> None:
    fault.script("a", [action])
    lines = sse_lines(served, {"model": "pa", "messages": Q, "stream": True})
    assert lines[-1] == "[DONE]"
    error = json.loads(lines[-2])["error"]
    assert error["type"] == "upstream_error" and what in error["message"]
    contents = [json.loads(x)["choices"][0]["delta"].get("content") for x in lines[:-2]]
    assert "answer " in contents  # the token that came before the break
    assert not any(json.loads(x)["choices"][0]["finish_reason"] for x in lines[:-2])
    fault.script("a", [action])
    with pytest.raises(openai.APIError, match="malformed"):
        list(client(served).chat.completions.create(model="pa", messages=Q, stream=True))
    wait_idle(served, within=2)  # the client stops reading at the error event


def test_a_malformed_proposer_is_one_failed_branch(served, fault) -> None:
    fault.script("p", ["bad-usage"])
    r = client(served).chat.completions.create(model="pa", messages=Q)
    failures = r.model_extra["aft"]["layers"][0]["failures"]
    assert len(failures) == 1 and failures[0]["type"] == "MalformedResponseError"


@pytest.mark.parametrize("model", ["pa", "d0", "sel"])
def test_streamed_text_is_the_answer_for_every_shape_and_preset(served, fault, model) -> None:
    c = client(served)
    fault.script("a", ["say:2"] if model == "sel" else [])
    whole = c.chat.completions.create(model=model, messages=Q, seed=3)
    fault.script("a", ["say:2"] if model == "sel" else [])
    chunks = list(c.chat.completions.create(model=model, messages=Q, seed=3, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text and text == whole.choices[0].message.content
    if model == "sel":  # the chosen draft, not the aggregator's raw pick
        assert text.startswith("answer 0 from p") and text != "2"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1


def test_finish_reason_is_the_final_generations(served, fault) -> None:
    c = client(served)
    fault.script("a", ["length"])
    assert c.chat.completions.create(model="pa", messages=Q).choices[0].finish_reason == "length"
    fault.script("a", ["length"])
    chunks = list(c.chat.completions.create(model="pa", messages=Q, stream=True))
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"


def test_an_upstream_that_echoes_the_key_never_shows_it_to_the_client(served, fault) -> None:
    c = client(served)
    fault.script("a", ["echo-key"])
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="pa", messages=Q)
    assert err.value.status_code == 502
    body = err.value.response.json()["error"]
    assert body["upstream_status"] == 401 and "Incorrect API key provided" in body["message"]
    fault.script("p", ["echo-key"])  # one proposer: a 200 whose trace lists the failure
    r = c.chat.completions.create(model="pa", messages=Q)
    failures = r.model_extra["aft"]["layers"][0]["failures"]
    assert len(failures) == 1 and "Incorrect API key" in failures[0]["message"]
    for text in (err.value.response.text, r.model_dump_json()):
        assert KEY not in text and KEY[-4:] not in text and KEY[:8] not in text


def test_routes_and_methods_the_server_lacks_get_openai_style_bodies(served) -> None:
    for method, path, status in (("GET", "/v1/nothing", 404),
                                 ("GET", "/v1/chat/completions", 405)):
        req = urllib.request.Request(f"http://127.0.0.1:{served.port}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == status
        body = json.loads(err.value.read())
        assert set(body) == {"error"} and body["error"]["message"]


@pytest.mark.parametrize("extra, message", [
    ({"response_format": "json_object"}, "response_format must be an object"),
    ({"stream_options": {"include_usage": True}}, "stream_options is only allowed with stream"),
])
def test_fields_that_would_be_ignored_are_refused(served, extra, message) -> None:
    with pytest.raises(openai.BadRequestError, match=message):
        client(served).chat.completions.create(model="pa", messages=Q, extra_body=extra)


def test_a_new_shape_beyond_the_run_bound_is_refused_before_it_is_built(served, fault) -> None:
    fault.delay_s = 1.0
    threads = [threading.Thread(target=client(served).chat.completions.create,
                                kwargs={"model": "pa", "messages": Q}) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.4)
    with pytest.raises(openai.RateLimitError):
        client(served).chat.completions.create(model="pa", messages=Q,
                                               extra_body={"width": 2, "depth": 3})
    for t in threads:
        t.join()
    fault.delay_s = 0.0
    wait_idle(served, within=2)


def test_shutdown_ends_a_stream_that_outlasts_the_grace_with_an_error_event(
        fault_server, tmp_path) -> None:
    fault_server.reset()
    fault_server.script("a", ["drip:0.5"])
    with LocalServer.aft_serve(_configs(tmp_path, fault_server.base_url),
                               extra_args=["--graceful-timeout", "1"]) as server:
        sock = raw_post(server, {"model": "pa", "messages": Q, "stream": True})
        got = read_until(sock, b'"content": "answer')
        os.killpg(server.proc.pid, signal.SIGTERM)
        sock.settimeout(15)
        while b"[DONE]" not in got:
            part = sock.recv(4096)
            if not part:
                break
            got += part
        sock.close()
    data = [line for line in got.decode().split("\n") if line.startswith("data: ")]
    assert "the server is shutting down" in data[-2] and data[-1] == "data: [DONE]"
