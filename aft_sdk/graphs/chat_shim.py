"""The final aggregation as a LangChain chat-model call, so LangGraph streams its tokens.

LangGraph's ``stream_mode="messages"`` (and LangGraph Server, and Studio) shows the tokens
of chat models called inside nodes; our backends are not chat models. The node that
writes the answer therefore calls its backend through :class:`BackendChat`: with a
streaming handler present (messages mode) LangChain calls :meth:`BackendChat._astream`
and every token reaches the stream; without one it calls ``_agenerate``, which is the
backend's own call. Either way the backend's :class:`Generation` comes back whole (in
the message's ``response_metadata``), and the message id lets ``finish`` append the
answer without LangGraph emitting it a second time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from aft_sdk.backends.base import Generation, ToolCallChunk
from aft_sdk.messages import text_of

GENERATION_KEY = "aft_generation"


class BackendChat(BaseChatModel):
    """One backend call as a chat model (used by the graph; not a public model class).

    The real messages travel in the ``aft_messages`` keyword (our message dicts, as the
    backend takes them); the LangChain messages LangChain sees are a text view for
    tracing callbacks.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any
    sampling: Any
    on_token: Callable[[str], None] | None = None
    options: Any = None

    def _kw(self) -> dict[str, Any]:
        return {} if self.options is None else {"options": self.options}

    @property
    def _llm_type(self) -> str:
        return "aft-backend"

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        if self.on_token is None:
            (gen,) = await self.backend.generate(kwargs["aft_messages"], n=1,
                                                 sampling=self.sampling, **self._kw())
        else:  # tokens as custom stream events only
            gen = None
            async for piece in self.backend.stream(kwargs["aft_messages"], sampling=self.sampling,
                                                   **self._kw()):
                if isinstance(piece, Generation):
                    gen = piece
                elif isinstance(piece, str):
                    self.on_token(piece)
            assert gen is not None  # every Backend.stream ends with a Generation
        message = AIMessage(content=gen.text,
                            response_metadata={GENERATION_KEY: gen.model_dump()})
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: Any = None, **kwargs: Any
                       ) -> AsyncIterator[ChatGenerationChunk]:
        async for piece in self.backend.stream(kwargs["aft_messages"], sampling=self.sampling,
                                               **self._kw()):
            if isinstance(piece, Generation):
                yield ChatGenerationChunk(message=AIMessageChunk(
                    content="", response_metadata={GENERATION_KEY: piece.model_dump()}))
            elif isinstance(piece, ToolCallChunk):
                yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[
                    {"index": piece.index, "id": piece.id, "name": piece.name,
                     "args": piece.arguments, "type": "tool_call_chunk"}]))
            else:
                if self.on_token is not None:
                    self.on_token(piece)
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:  # pragma: no cover
        raise NotImplementedError("the graph calls BackendChat asynchronously")


def traced_view(messages: list[dict[str, Any]]) -> list[BaseMessage]:
    """What tracing callbacks show of the prompt: its text, one message per turn."""
    return [HumanMessage(content=text_of(m.get("content")), name=m.get("role"))
            for m in messages]


async def final_call(backend: Any, messages: list[dict[str, Any]], sampling: Any,
                     config: Any, on_token: Callable[[str], None] | None,
                     options: Any = None) -> tuple[Generation, str | None]:
    """The final aggregation through :class:`BackendChat`: its generation and the id of
    the message LangGraph streamed (``None`` if it streamed none)."""
    chat = BackendChat(backend=backend, sampling=sampling, on_token=on_token, options=options)
    message = await chat.ainvoke(traced_view(messages), config=config, aft_messages=messages)
    gen = Generation.model_validate(message.response_metadata[GENERATION_KEY])
    return gen, message.id
