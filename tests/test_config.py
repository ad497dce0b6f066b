"""Config validation and YAML loading give errors that name the field."""

from __future__ import annotations

import pytest

from aft_sdk import AggregateGraph, ConfigError, GraphConfig, SamplingConfig, load_yaml
from aft_sdk.config import validate


def test_sampling_bounds_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"temperature: .*less than or equal to 2"):
        validate(SamplingConfig, {"temperature": 5})
    with pytest.raises(ConfigError, match=r"seed: .*greater than or equal to 0"):
        SamplingConfig().merged(seed=-1)


def test_config_error_is_also_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_yaml_graph_config_round_trip(tmp_path, fault) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(
        f"""
width: 2
depth: 2
preset: moa
proposers:
  - {{type: openai, model: p, base_url: "{fault.base_url}", max_retries: 0}}
aggregator:
  - {{type: openai, model: a, base_url: "{fault.base_url}"}}
proposer_sampling: {{max_tokens: 17, seed: 4}}
aggregator_sampling: {{max_tokens: 33}}
"""
    )
    cfg = load_yaml(path, GraphConfig)
    assert cfg.width == 2 and cfg.proposers[0].model == "p"
    graph = AggregateGraph.from_config(path)
    result = graph.invoke("yaml question")
    assert result.usage.generations == 5 and result.preset == "moa-v1"
    assert {r["max_tokens"] for r in fault.requests if r["model"] == "p"} == {17}
    assert {r["max_tokens"] for r in fault.requests if r["model"] == "a"} == {33}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("width: 0\n", r"width: Input should be greater than or equal to 1"),
        ("widht: 3\n", r"widht: Extra inputs are not permitted"),
        ("proposers:\n  - {type: openai}\n", r"proposers\.0\.openai\.model: Field required"),
        ("proposers:\n  - {type: gemini, model: x}\n", r"proposers\.0\.type: .*unknown backend type 'gemini'"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("width: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_yaml_says_which_field(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml(path, GraphConfig)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml("/nonexistent/graph.yaml", GraphConfig)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("   ", "the question is empty"),
        ([], "non-empty list"),
        ([{"role": "robot", "content": "x"}], r"messages\[0\]\.role must be one of"),
        ([{"role": "user", "content": 3}], r"messages\[0\]\.content must be a string"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
         "end with a user turn"),
    ],
)
def test_bad_messages_are_rejected_before_any_call(fault, messages, message) -> None:
    graph = AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#a", width=2)
    with pytest.raises(ConfigError, match=message):
        graph.invoke(messages)
    assert fault.count() == 0


@pytest.mark.parametrize(("changes", "named"), [
    ({"max_width": 0}, "max_width"), ({"request_timeout_s": -1.0}, "request_timeout_s"),
    ({"max_depth": True}, "max_depth"), ({"max_widht": 3}, "max_widht"),
])
def test_serve_settings_in_app_code_refuse_bad_limits_by_name(changes, named) -> None:
    pytest.importorskip("fastapi")
    from aft_sdk.serve import ServeSettings

    with pytest.raises(ConfigError, match=named):
        ServeSettings(**changes)
    keyed = ServeSettings(api_keys=("sk-never-shown",))
    assert "sk-never-shown" not in repr(keyed) and "sk-never-shown" not in str(keyed)


def test_backend_arguments_take_paths_and_name_bad_values(tmp_path) -> None:
    from aft_sdk.backends.openai_backend import OpenAIBackend
    from aft_sdk.config import OpenAIBackendConfig
    from aft_sdk.validation import validate_arguments

    with pytest.raises(ConfigError, match="max_retries"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9", max_retries=-1)
    cfg = validate_arguments(OpenAIBackendConfig, {"model": tmp_path, "self": object()},
                             source="test")
    assert cfg.model == str(tmp_path)
