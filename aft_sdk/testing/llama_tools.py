"""llama-cpp-python's OpenAI-compatible server with tool calling for ChatML models.

``python -m aft_sdk.testing.llama_tools --model X.gguf ...`` takes the flags of
``python -m llama_cpp.server`` and serves with the chat handler ``aft-chatml-tools``:
llama-cpp-python's own ChatML function-calling handler (a grammar chooses between a
message and a call; the tool's JSON schema constrains the arguments), given what it
lacks for OpenAI's semantics: tools without ``tool_choice`` mean ``auto``, ``required``
with one tool forces that tool, tool results reach the model (its template has no
``tool`` role) and a system turn lists the tools (its template lists them there only).
Requests without tools use the model's own chat template, calls and results written
as text. It is the same path as :class:`~aft_sdk.backends.EmbeddedBackend`'s tool requests.
"""

from __future__ import annotations

import sys
from typing import Any

from llama_cpp import llama_chat_format

from aft_sdk.backends.embedded_backend import chatml_function_calling, chatml_tool_messages
from aft_sdk.messages import calls_as_text

HANDLER = "aft-chatml-tools"


@llama_chat_format.register_chat_completion_handler(HANDLER)
def chatml_tools(*, llama: Any, messages: list[dict[str, Any]], tools: Any = None,
                 tool_choice: Any = None, **kwargs: Any) -> Any:
    if tools and tool_choice is None:
        tool_choice = "auto"
    if tool_choice == "required":
        if len(tools or []) != 1:
            raise ValueError("tool_choice 'required' with several tools is not supported "
                             "by this server: name the tool")
        tool_choice = {"type": "function", "function": {"name": tools[0]["function"]["name"]}}
    if not tools or tool_choice == "none":  # the model's own template, as without tools
        return llama._chat_handlers["chat_template.default"](
            llama=llama, messages=calls_as_text(messages), **kwargs)
    return chatml_function_calling()(
        llama=llama, messages=chatml_tool_messages(messages), tools=tools,
        tool_choice=tool_choice, **kwargs)


def main() -> None:
    from llama_cpp.server.__main__ import main as serve

    sys.argv = [sys.argv[0], *sys.argv[1:], "--chat_format", HANDLER]
    serve()


if __name__ == "__main__":
    main()
