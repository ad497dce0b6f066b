"""aft-sdk inside other frameworks: LangChain (both ways) and LangGraph Server.

- ``aft_sdk.integrations.langchain``: :class:`AggregateChatModel` (a graph as a chat model)
  and :class:`LangChainBackend` (any chat model as a backend).
- ``aft_sdk.integrations.langgraph_server``: the graph factory ``langgraph dev`` serves.
"""
