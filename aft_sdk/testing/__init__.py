"""Local servers for tests, benchmarks and recipes: our fault server and real model servers."""

from aft_sdk.testing.fault_server import FaultServer
from aft_sdk.testing.servers import LocalServer, free_port

__all__ = ["FaultServer", "LocalServer", "free_port"]
