"""A strategy and a backend from another package (tests/plugins: modules and their
.dist-info, found through the entry point groups ``aft_sdk.strategies`` and
``aft_sdk.backends``) run everywhere built-ins do, with no edit to aft_sdk; a broken
plug-in fails where it is used, naming itself."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from aft_sdk import AggregateGraph, ConfigError, GraphConfig
from aft_sdk.config import load_yaml
from aft_sdk.testing import LocalServer

PLUGINS = Path(__file__).with_name("plugins")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(PLUGINS), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(autouse=True)
def plugin_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))
    importlib.invalidate_caches()


def yaml_config(tmp_path: Path, url: str, extra: str = "refine:\n  steps: 3\n") -> Path:
    """The plug-in strategy over drafts of the plug-in backend and a real server's."""
    path = tmp_path / "refine.yaml"
    path.write_text(
        "name: refiner\nstrategy: refine\nwidth: 2\n" + extra
        + "proposers:\n  - {type: echo, prefix: drafted}\n"
        + f"  - {{type: openai, model: p, base_url: '{url}', max_retries: 0}}\n"
        + "aggregator:\n  - {type: echo, prefix: refined}\n")
    return path


def test_a_plugin_strategy_builds_runs_and_costs_from_its_own_settings(fault, tmp_path) -> None:
    cfg = load_yaml(yaml_config(tmp_path, fault.base_url), GraphConfig)
    assert cfg.plugins == {"refine": {"steps": 3}}
    assert cfg.cost().most == 2 + 2 + 2 + 1  # drafts, two middle layers, the answer
    result = AggregateGraph.from_config(cfg).invoke("What is 2 + 2?")
    assert [len(layer.outputs) for layer in result.layers] == [2, 2, 2, 1]
    assert result.strategy == "refine" and result.answer.startswith("refined ")
    assert [o.backend.split("(")[0] for o in result.layers[0].outputs][0] == "echo:drafted"
    # The settings round-trip through a dump (YAML, Ray workers, aft serve).
    assert GraphConfig.model_validate(cfg.model_dump()) == cfg


def test_plugin_settings_and_checks_fail_as_config_errors(fault, tmp_path) -> None:
    with pytest.raises(ConfigError, match="stepz"):
        load_yaml(yaml_config(tmp_path, fault.base_url, "refine:\n  stepz: 3\n"), GraphConfig)
    with pytest.raises(ConfigError, match="refine takes its depth"):
        GraphConfig(strategy="refine", depth=2, refine={"steps": 3})
    with pytest.raises(ConfigError, match="budget.generations=4 is below the 7"):
        GraphConfig(strategy="refine", width=2, refine={"steps": 3}, budget={"generations": 4})


def test_a_broken_plugin_is_named_where_it_is_used_never_at_import() -> None:
    r = subprocess.run([sys.executable, "-c", "import aft_sdk, aft_sdk.config; print('ok')"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr
    with pytest.raises(ConfigError, match=r"broken-plugin.*aft_refine_missing.*cannot be loaded"):
        GraphConfig(strategy="broken-plugin")
    with pytest.raises(ConfigError, match="unknown strategy 'refin'.*refine"):
        GraphConfig(strategy="refin")


def test_cli_lists_and_runs_the_plugin(fault, tmp_path) -> None:
    cli = [sys.executable, "-m", "aft_sdk.cli.main"]
    listed = subprocess.run([*cli, "strategies"], capture_output=True, text=True, env=ENV,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "refine: width drafts" in listed.stdout and "refine.steps = 2" in listed.stdout
    assert "broken-plugin: cannot be loaded" in listed.stdout
    for name in ("propose-aggregate", "vote", "best-of-n", "rsa"):
        assert f"\n{name}: " in "\n" + listed.stdout
    run = subprocess.run([*cli, "run", "--config", str(yaml_config(tmp_path, fault.base_url)),
                          "--json", "hello"], capture_output=True, text=True, env=ENV,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert [len(layer["outputs"]) for layer in json.loads(run.stdout)["layers"]] == [2, 2, 2, 1]
    # The plug-in's settings are flags too (from the registry), over the file's section.
    run = subprocess.run([*cli, "run", "--config", str(yaml_config(tmp_path, fault.base_url)),
                          "--refine-steps", "1", "--json", "hello"], capture_output=True,
                         text=True, env=ENV, timeout=120)
    assert run.returncode == 0, run.stderr
    assert [len(layer["outputs"]) for layer in json.loads(run.stdout)["layers"]] == [2, 1]


@pytest.mark.slow
def test_aft_serve_and_langchain_run_the_plugin(fault, tmp_path) -> None:
    config = yaml_config(tmp_path, fault.base_url)

    def ask(srv: LocalServer, **fields) -> tuple[int, dict]:
        body = json.dumps({"model": "refiner", "messages": [{"role": "user", "content": "hi"}],
                           **fields}).encode()
        req = urllib.request.Request(f"{srv.base_url}/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with LocalServer.aft_serve([config], env={"PYTHONPATH": ENV["PYTHONPATH"]}) as srv:
        status, answer = ask(srv)
        assert status == 200 and answer["aft"]["strategy"] == "refine"
        assert answer["choices"][0]["message"]["content"].startswith("refined ")
        assert len(answer["aft"]["layers"]) == 4  # the file's refine.steps: 3
        # Per request: the strategy's own section, and another strategy, by the registry.
        status, answer = ask(srv, refine={"steps": 1})
        assert status == 200 and len(answer["aft"]["layers"]) == 2, answer
        status, answer = ask(srv, strategy="vote", width=3)
        assert status == 200 and answer["aft"]["strategy"] == "vote", answer
        status, answer = ask(srv, refine={"stepz": 1})
        assert status == 400 and "stepz" in answer["error"]["message"], answer
        status, answer = ask(srv, strategy="vote", vote={"extractor": "import:os:getcwd"})
        assert status == 400 and "'vote' is a setting of the served graph" in \
            answer["error"]["message"], answer
        status, answer = ask(srv, refine={"steps": 60})
        assert status == 400 and "above this server's limit of 80" in answer["error"]["message"]
    pytest.importorskip("langchain_core")
    from aft_sdk.integrations.langchain import AggregateChatModel

    model = AggregateChatModel(graph=AggregateGraph.from_config(config))
    assert model.invoke("hello there").content.startswith("refined ")


def test_plugin_backend_specs_and_errors(fault) -> None:
    graph = AggregateGraph(["echo:one", "echo:two"], "echo:judge", width=2)
    result = graph.invoke("a b c")
    assert result.answer == "judge c b a" and graph.portable  # specs: data, Ray-ready
    assert [o.backend for o in result.layers[0].outputs] == ["echo:one", "echo:two"]
    with pytest.raises(ConfigError, match=r"proposers\.0\.type\.prefx"):
        load_yaml_text("proposers:\n  - {type: echo, prefx: p}\n")
    with pytest.raises(ConfigError, match="unknown backend spec 'ecko:x'.*installed plug-ins: echo"):
        AggregateGraph(["ecko:x"])


def load_yaml_text(text: str) -> GraphConfig:
    import yaml

    from aft_sdk.config import validate

    return validate(GraphConfig, yaml.safe_load(text), source="graph config")


def test_any_langchain_chat_model_from_a_config(fault, monkeypatch, tmp_path) -> None:
    pytest.importorskip("langchain_openai")
    monkeypatch.setenv("AFT_TEST_LC_KEY", "sk-test-not-a-real-key")
    path = tmp_path / "lc.yaml"
    path.write_text(
        "width: 2\nproposers:\n  - {type: langchain, model_class: 'langchain_openai:ChatOpenAI', "
        f"kwargs: {{model: lc, base_url: '{fault.base_url}', max_retries: 0}}, "
        "api_key_env: AFT_TEST_LC_KEY}\naggregator:\n  - {type: echo, prefix: agg}\n")
    cfg = load_yaml(path, GraphConfig)
    assert "sk-test" not in cfg.model_dump_json()  # the key stays in the environment
    result = AggregateGraph.from_config(cfg).invoke("hi")
    assert [o.backend for o in result.layers[0].outputs] == ["langchain:ChatOpenAI(lc)"] * 2
    assert fault.headers[-1]["authorization"] == "Bearer sk-test-not-a-real-key"
    with pytest.raises(ConfigError, match="api_key must not be given as a value"):
        load_yaml_text("proposers:\n  - {type: langchain, model_class: 'a:B', "
                       "kwargs: {api_key: sk-oops}}\n")
