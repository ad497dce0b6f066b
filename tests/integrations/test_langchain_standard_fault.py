"""LangChain's standard chat-model tests (``langchain-tests``) on our fault server in its
permissive mode (:class:`~aft_sdk.testing.FaultServer`): a model that always does as
asked (calls the tool it is offered, answers in the schema it is given, streams usage).

The llama.cpp run (``test_langchain_standard.py``) skips the tests that its server or
its 135M model cannot pass (``BOTH_FAIL`` there); here every test runs, so the tool and
structured-output plumbing of ``AggregateChatModel`` is checked end to end over real
HTTP, beside ``ChatOpenAI`` on the same server as the baseline. Seconds, no model.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_tests", reason="needs pip install 'aft-sdk[dev]'")
pytest.importorskip("langchain_openai", reason="needs pip install 'aft-sdk[langchain]'")

from langchain_openai import ChatOpenAI  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402

from aft_sdk.backends import OpenAIBackend  # noqa: E402
from aft_sdk.graphs import AggregateGraph  # noqa: E402
from aft_sdk.integrations.langchain import AggregateChatModel  # noqa: E402
from aft_sdk.testing import FaultServer  # noqa: E402

SERVER: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _permissive_server():
    with FaultServer(permissive=True) as srv:
        SERVER["url"] = srv.base_url
        yield srv
    SERVER.clear()


class _Features:
    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True


class TestChatOpenAIOnTheFaultServer(_Features, ChatModelIntegrationTests):
    """The baseline: what the server lets a plain OpenAI client pass."""

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "fault", "base_url": SERVER["url"], "api_key": "none",
                "max_retries": 0}


class TestAggregateChatModelOnTheFaultServer(_Features, ChatModelIntegrationTests):
    """Two proposers and an aggregator, all ``OpenAIBackend``s on the server."""

    @property
    def chat_model_class(self) -> type[AggregateChatModel]:
        return AggregateChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        proposer = OpenAIBackend("proposer", base_url=SERVER["url"], max_retries=0)
        aggregator = OpenAIBackend("aggregator", base_url=SERVER["url"], max_retries=0)
        return {"graph": AggregateGraph(proposer, aggregator, width=2, depth=1)}
