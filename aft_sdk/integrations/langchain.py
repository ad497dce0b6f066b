"""LangChain both ways: a graph as a chat model, and any chat model as a backend.

- :class:`AggregateChatModel` wraps an :class:`~aft_sdk.graphs.AggregateGraph` as a
  ``BaseChatModel``: ``invoke`` / ``ainvoke`` / ``stream`` / ``astream`` / ``batch``,
  usage summed over every layer in ``usage_metadata``, the trace summary in
  ``response_metadata``; it drops into LCEL chains (``prompt | model | parser``).
- :class:`LangChainBackend` (from :mod:`aft_sdk.backends.langchain_backend`, re-exported
  here) makes any LangChain chat model a proposer or aggregator.
"""

from __future__ import annotations

import asyncio
from operator import itemgetter
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.language_models import LanguageModelInput
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict

from aft_sdk import errors
from aft_sdk.aio import run_sync
from aft_sdk.backends.langchain_backend import LangChainBackend
from aft_sdk.graphs import AggregateGraph, AggregateResult
from aft_sdk.tools import CALL_FIELDS, langchain_call


def _usage(result: AggregateResult) -> dict[str, int]:
    u = result.usage
    return {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


def _name(preset: str, width: int, depth: int) -> str:
    return f"aft:{preset}:w{width}d{depth}"


def _metadata(result: AggregateResult) -> dict[str, Any]:
    return {"model_name": _name(result.preset, result.width, result.depth),
            "aft_summary": result.summary(), "aft_failures": len(result.failures),
            "finish_reason": result.finish_reason}


class AggregateChatModel(BaseChatModel):
    """A propose-and-aggregate graph as a LangChain chat model.

    Fields (keywords of the constructor, as for any LangChain chat model): ``graph``,
    the graph to run for every call; ``temperature``, ``top_p``, ``max_tokens`` and
    ``stop``, sampling of the final layer (the answer) on top of the graph's own (a
    ``stop`` passed with a call wins); ``timeout`` and ``max_retries`` (below).

    Attributes:
        graph: The graph to run for every call.
        timeout: Seconds one call may take (the run is cancelled after it:
            :class:`~aft_sdk.errors.GraphTimeoutError`); ``None``: the graph's deadline.
        max_retries: Further runs after a run fails (:class:`~aft_sdk.errors.GraphError`:
            too few drafts, a failed final aggregation); backends retry their own
            requests besides.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    graph: AggregateGraph
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    max_retries: int = 0

    @property
    def _llm_type(self) -> str:
        return "aft-aggregate"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"width": self.graph.width, "depth": self.graph.depth,
                "preset": self.graph.plan.template.name}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        """LangSmith's run parameters: traces name the graph as the model."""
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "aft"
        params["ls_model_name"] = kwargs.get("model") or _name(
            self.graph.plan.template.name, self.graph.width, self.graph.depth)
        return params

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None,
                   parallel_tool_calls: bool | None = None, strict: bool | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """The model with tools offered to every draft and aggregation.

        ``tools``: LangChain tools, functions, pydantic classes or OpenAI tool dicts.
        ``tool_choice``: ``"auto"``, ``"none"``, ``"required"`` (``"any"`` and ``True``
        mean it too) or a tool's name. How drafts' calls become the answer's call is the
        graph's ``tools.policy`` (see ``docs/how-to/structured-output.md``).
        """
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        if tool_choice in ("any", True):
            tool_choice = "required"
        elif isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
            tool_choice = {"type": "function", "function": {"name": tool_choice}}
        extra = {"tool_choice": tool_choice} if tool_choice not in (None, False) else {}
        if parallel_tool_calls is not None:
            extra["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **extra, **kwargs)

    def with_structured_output(self, schema: Any, *, method: str = "function_calling",
                               include_raw: bool = False, strict: bool | None = None,
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """Answers parsed into ``schema`` (a pydantic class, TypedDict or JSON schema).

        ``method``: ``function_calling`` (the schema as a forced tool, parsed from the
        call), ``json_schema`` (the answer constrained to the schema and checked
        against it) or ``json_mode`` (any JSON object, parsed).
        """
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        if method not in ("json_schema", "json_mode"):
            raise errors.ConfigError(f"method must be function_calling, json_schema or "
                                     f"json_mode, got {method!r}")
        pydantic_class = isinstance(schema, type) and issubclass(schema, BaseModel)
        if method == "json_mode":
            fmt: dict[str, Any] = {"type": "json_object"}
        else:
            fn = convert_to_openai_tool(schema)["function"]
            fmt = {"type": "json_schema", "json_schema": {
                "name": fn["name"], "schema": schema.model_json_schema() if pydantic_class
                else fn.get("parameters", schema), **({"strict": strict} if strict else {})}}
        llm = self.bind(response_format=fmt, ls_structured_output_format={
            "kwargs": {"method": method}, "schema": schema})
        parser: Any = PydanticOutputParser(pydantic_object=schema) if pydantic_class \
            else JsonOutputParser()
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser,
                                            parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback],
                                                           exception_key="parsing_error")

    def _final(self, stop: list[str] | None) -> dict[str, Any] | None:
        values = {"temperature": self.temperature, "top_p": self.top_p,
                  "max_tokens": self.max_tokens, "stop": stop or self.stop or None}
        final = {k: v for k, v in values.items() if v is not None}
        return final or None

    async def _arun(self, messages: list[BaseMessage], stop: list[str] | None,
                    kwargs: dict[str, Any]) -> AggregateResult:
        """One run, with the call's timeout and the model's whole-run retries."""
        for attempt in range(self.max_retries + 1):
            try:
                async with asyncio.timeout(self.timeout):
                    return await self.graph.ainvoke(messages, final_sampling=self._final(stop),
                                                    call=self._call(kwargs))
            except TimeoutError as e:
                raise errors.GraphTimeoutError(
                    f"the run took longer than timeout={self.timeout}s") from e
            except errors.GraphError:
                if attempt == self.max_retries:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _call(kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The request's tools and format from the bound keyword arguments."""
        unknown = sorted(set(kwargs) - set(CALL_FIELDS) - {"ls_structured_output_format"})
        if unknown:
            raise errors.ConfigError(
                f"AggregateChatModel takes no per-call {unknown}: the graph's backends are "
                "set when it is built; per call it takes tools, tool_choice, "
                "parallel_tool_calls, response_format and stop")
        call = {k: kwargs[k] for k in CALL_FIELDS if kwargs.get(k) is not None}
        return call or None

    @staticmethod
    def _result(result: AggregateResult) -> ChatResult:
        calls = [langchain_call(c) for c in result.tool_calls or []]
        message = AIMessage(content=result.answer, usage_metadata=_usage(result),
                            response_metadata=_metadata(result), tool_calls=calls)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
                  ) -> ChatResult:
        return self._result(run_sync(self._arun(messages, stop, kwargs)))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        return self._result(await self._arun(messages, stop, kwargs))

    @staticmethod
    def _chunk(event: dict[str, Any]) -> ChatGenerationChunk | None:
        if event["event"] == "token":
            return ChatGenerationChunk(message=AIMessageChunk(content=event["text"]))
        if event["event"] == "result":
            result = event["result"]
            chunks = [{"index": i, "id": c["id"], "name": c["function"]["name"],
                       "args": c["function"]["arguments"], "type": "tool_call_chunk"}
                      for i, c in enumerate(result.tool_calls or [])]
            return ChatGenerationChunk(message=AIMessageChunk(
                content="", usage_metadata=_usage(result), response_metadata=_metadata(result),
                tool_call_chunks=chunks, chunk_position="last"))
        return None

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
                ) -> Iterator[ChatGenerationChunk]:
        for event in self.graph.stream(messages, final_sampling=self._final(stop),
                                       call=self._call(kwargs)):
            chunk = self._chunk(event)
            if chunk is not None:
                if run_manager and event["event"] == "token":
                    run_manager.on_llm_new_token(event["text"], chunk=chunk)
                yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        async for event in self.graph.astream(messages, final_sampling=self._final(stop),
                                              call=self._call(kwargs)):
            chunk = self._chunk(event)
            if chunk is not None:
                if run_manager and event["event"] == "token":
                    await run_manager.on_llm_new_token(event["text"], chunk=chunk)
                yield chunk

__all__ = ["AggregateChatModel", "LangChainBackend"]
