"""Keys are scoped to the host they belong to and never reach messages, traces or output."""

from __future__ import annotations

import json

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from aft_sdk import (
    AggregateGraph,
    ConfigError,
    GraphConfig,
    OpenAIBackend,
    arun_batch,
    make_backend,
)
from aft_sdk.config import load_yaml

ENV_KEY = "sk-env-openai-secret-111"
OTHER_KEY = "tg-together-secret-222"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def leaky_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment as a typical user has it: an OpenAI key and org, and another key."""
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("OPENAI_ORG_ID", "org-secret-333")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-secret-444")
    monkeypatch.setenv("TOGETHER_KEY", OTHER_KEY)


def _sent(fault) -> str:
    return json.dumps(fault.headers)


async def test_the_environments_openai_key_never_goes_to_another_host(fault, leaky_env) -> None:
    for backend in (OpenAIBackend("m", base_url=fault.base_url),
                    make_backend(f"{fault.base_url}#m2")):
        await backend.generate([{"role": "user", "content": "hi"}])
    sent = _sent(fault)
    assert len(fault.headers) == 2
    assert ENV_KEY not in sent and "org-secret" not in sent and "proj-secret" not in sent
    assert all("authorization" not in h for h in fault.headers)


async def test_a_named_key_goes_only_where_it_was_named(fault, leaky_env) -> None:
    await OpenAIBackend("m", base_url=fault.base_url, api_key_env="TOGETHER_KEY").generate(HI)
    await make_backend(f"{fault.base_url}#m3?key_env=TOGETHER_KEY").generate(HI)
    await OpenAIBackend("m", base_url=fault.base_url, api_key="explicit-555").generate(HI)
    auth = [h.get("authorization") for h in fault.headers]
    assert auth == [f"Bearer {OTHER_KEY}", f"Bearer {OTHER_KEY}", "Bearer explicit-555"]
    assert ENV_KEY not in _sent(fault)


async def test_openai_base_url_pairs_with_the_environments_key(fault, leaky_env,
                                                               monkeypatch) -> None:
    """As the openai client reads them: a backend given no base_url goes to
    OPENAI_BASE_URL with OPENAI_API_KEY; one given a base_url still gets no key."""
    monkeypatch.setenv("OPENAI_BASE_URL", fault.base_url + "/")
    paired = OpenAIBackend("m")
    assert paired.base_url == fault.base_url
    await paired.generate(HI)
    await OpenAIBackend("m", base_url=fault.base_url).generate(HI)
    auth = [h.get("authorization") for h in fault.headers]
    assert auth == [f"Bearer {ENV_KEY}", None]
    assert "org-secret" not in _sent(fault)
    monkeypatch.delenv("OPENAI_API_KEY")
    await OpenAIBackend("m").generate(HI)  # a local server may need no key
    assert "authorization" not in fault.headers[-1]


def test_key_rules_fail_early_with_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match="no API key for OpenAI: set OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE, which is not set"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key_env="NOT_SET_ANYWHERE")
    with pytest.raises(ConfigError, match="unknown option 'key'"):
        make_backend("http://127.0.0.1:9/v1#m?key=abc")


@pytest.mark.parametrize(
    ("yaml_text", "secret"),
    [
        ("proposers:\n  - {type: openai, model: x, apikey: sk-typo-secret-1}\n", "sk-typo-secret-1"),
        ("proposers:\n  - {type: openai, model: x, api_key_env: sk-pasted-secret-2}\n",
         "sk-pasted-secret-2"),
        ("proposers:\n  - {type: openai, model: x, api_key: [sk-list-secret-3]}\n",
         "sk-list-secret-3"),
        ("aggregator:\n  - {type: openai, model: x, token: tok-secret-4}\n", "tok-secret-4"),
    ],
)
def test_config_errors_name_the_field_but_never_echo_secrets(tmp_path, yaml_text, secret) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_yaml(path, GraphConfig)
    message = str(err.value)
    assert secret not in message
    assert "proposers.0" in message or "aggregator.0" in message


def test_spec_errors_hide_url_credentials() -> None:
    with pytest.raises(ConfigError) as err:
        make_backend("http://user:hunter2@127.0.0.1:9/v1?api-key=q-secret#m?bad=1")
    assert "hunter2" not in str(err.value) and "q-secret" not in str(err.value)


async def test_credentials_in_urls_never_reach_traces_output_or_checkpoints(fault, tmp_path) -> None:
    url = fault.base_url.replace("http://", "http://user:pw-secret-6@") + "?api-key=q-secret-7"
    backend = OpenAIBackend("m", base_url=url, max_retries=0)
    assert backend.label == f"openai:m@{fault.base_url}"
    saver = InMemorySaver()
    graph = AggregateGraph(backend, backend, width=2, depth=1, checkpointer=saver)
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "1", "question": "hi"}\n')
    out = tmp_path / "out.jsonl"
    try:
        result = await graph.ainvoke("hi", thread_id="t")
        dumped = result.model_dump_json()
    except Exception as e:  # whether or not the server accepted the odd URL
        dumped = repr(e) + str(getattr(e, "failures", ""))
    graph2 = AggregateGraph(backend, backend, width=2, depth=1)
    await arun_batch(graph2, questions, out, progress=False)
    stored = repr(list(saver.storage.items())) + repr(list(saver.writes.items()))
    everything = dumped + out.read_text() + out.with_name(out.name + ".errors.jsonl").read_text() + stored
    assert "pw-secret-6" not in everything and "q-secret-7" not in everything
    assert "openai:m@http://127.0.0.1" in everything
