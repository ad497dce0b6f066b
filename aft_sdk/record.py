"""Recording runs for training on later: ``aft serve --record DIR``, ``AggregateGraph(record=)``
and ``run_batch(record=)`` keep every answered run as a row.

A row (schema ``aft.record/1``, one JSON object per line in ``DIR/runs-DATE-NNN.jsonl``):

- ``record``: the schema name; ``id``: the response's id (what a client sends back as
  feedback), ``choice``: the answer's index (``n`` > 1);
- ``time`` (UTC, ISO 8601), ``model`` (the served model id), ``route``;
- ``config``: ``{"name", "sha256"}``, the served config's identity (its JSON, keys masked,
  hashed: rows of one setup share it);
- ``answer``, ``cost_usd`` (``null`` where a price is unknown) and ``result``: the whole
  :class:`~aft_sdk.graphs.AggregateResult` (conversation, every layer's outputs with the
  backend and model that wrote them, decisions, usage), as ``aft batch`` writes it, so
  ``aft data build traces`` reads record files as they are; ``aft data build records
  DIR`` reads the folder with its feedback (:mod:`aft_sdk.trainers.records`).

From Python, ``AggregateGraph(record=DIR)`` and ``run_batch(..., record=DIR)`` record
each result (its ``record_id`` is the row's id); :meth:`Recorder.add` records one by hand
and :meth:`Recorder.feedback` attaches feedback. Feedback (``POST /v1/feedback``) goes to
``DIR/feedback-DATE.jsonl``: ``{"record": "aft.feedback/1", "id", "time", "score",
"label", "better_answer", "reference"}``.

Rows are written by one background thread, never on a request's path; a file is closed
and the next one begun past ``max_file_bytes`` or at midnight UTC; past ``max_bytes`` in
the folder, no more rows are written (one warning says so, and how many were dropped).
:meth:`Recorder.close` (at shutdown, SIGTERM included) writes every queued row first.
Keys and request headers are never written (a result names backends by label only).
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import json
import logging
import os
import queue
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from aft_sdk.errors import ConfigError
logger = logging.getLogger(__name__)
#: The schema of a recorded run's row and of a feedback row.
SCHEMA = "aft.record/1"
FEEDBACK_SCHEMA = "aft.feedback/1"
#: A file is closed and the next begun past this size.
DEFAULT_FILE_BYTES = 64 * 2**20
_STOP = object()


def graph_identity(graph: Any) -> Any:
    """What identifies a graph's setup in its rows: its config, and the labels of the
    backends it was given as objects (a config does not describe those)."""
    config = getattr(graph, "config", graph)
    live = getattr(graph, "_live", None) or {}
    labels: list[str] = []

    def walk(value: Any) -> None:
        if hasattr(value, "label"):
            labels.append(str(value.label))
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(live)
    if not labels:
        return config
    dump = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    return {"config": dump, "backends": labels}


def config_identity(name: str, config: Any) -> dict[str, str]:
    """``{"name", "sha256"}`` of a served config (its JSON dump, secrets masked)."""
    dump = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    data = json.dumps(dump, sort_keys=True, default=str)
    return {"name": name, "sha256": hashlib.sha256(data.encode()).hexdigest()}


_OPEN: dict[Path, Recorder] = {}  # folder -> its recorder in this process
_OPEN_LOCK = threading.Lock()
#: Rows written between two syncs at most, however busy the writer is.
SYNC_EVERY = 64
_ID = re.compile(rb'"id":\s*"((?:[^"\\]|\\.)*)"')


def as_recorder(record: Any) -> Recorder | None:
    """``record=`` as given to a graph or ``run_batch``: a folder (one :class:`Recorder`
    per folder in a process, shared by every graph that names it), a :class:`Recorder`,
    or ``None``."""
    if record is None or isinstance(record, Recorder):
        return record
    if not isinstance(record, (str, os.PathLike)):
        raise ConfigError(f"record= takes a folder or a Recorder, got {type(record).__name__}")
    key = Path(record).resolve()
    with _OPEN_LOCK:
        found = _OPEN.get(key)
        if found is None or found.closed:
            found = _OPEN[key] = Recorder(key)
        return found


class Recorder:
    """Appends run rows and feedback to a folder from a writer thread.

    Args:
        folder: Where the files go (made if missing).
        max_file_bytes: Size past which a file is closed and the next begun.
        max_bytes: Bound on the folder's record files; past it rows are dropped, with a
            warning (``None``: no bound).
    """

    def __init__(self, folder: str | os.PathLike[str], *,
                 max_file_bytes: int = DEFAULT_FILE_BYTES, max_bytes: int | None = None) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--record {self.folder}: cannot make the folder ({e})") from e
        if not os.access(self.folder, os.W_OK):
            raise ConfigError(f"--record {self.folder}: the folder is not writable")
        self.max_file_bytes, self.max_bytes = max_file_bytes, max_bytes
        self.dropped = 0
        self.written = 0
        self._ids: set[str] = set()  # recorded here, and read from the folder's files
        self._scanned: dict[Path, int] = {}  # file -> bytes of it read for ids
        self._lock, self._write_lock = threading.Lock(), threading.Lock()
        self.closed = False
        self._dirty: set[Path] = set()
        self._unsynced = 0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._used = sum(p.stat().st_size for p in self._files("*"))
        self._current: dict[str, Path] = {}
        self._thread = threading.Thread(target=self._write_loop, name="aft-recorder",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close)  # rows queued at exit are written first

    # -- the request side (never blocks) -----------------------------------------------

    def runs(self, rid: str, model: str, route: str, config: dict[str, str],
             results: list[Any]) -> None:
        """Queues one row per answer of a response ``rid`` (each result serialised now,
        so the row is the result as it was answered)."""
        now = _now()
        for i, result in enumerate(results):
            self._put("runs", {"record": SCHEMA, "id": rid, "choice": i, "time": now,
                               "model": model, "route": route, "config": config,
                               "answer": result.answer,
                               "cost_usd": result.usage.known_cost_usd,
                               "result": _Json(result.model_dump_json())})
        with self._lock:
            self._ids.add(rid)

    def add(self, result: Any, *, model: str = "python", config: Any = None,
            route: str = "python", rid: str | None = None) -> str:
        """Records a result from Python (a graph's ``invoke``) and returns its id (also set
        as the result's ``record_id``), for :meth:`feedback`; ``config``: the graph's
        config (or any JSON-able identity), for the rows' identity."""
        rid = rid or f"run-aft{uuid.uuid4().hex[:24]}"
        result.record_id = rid
        ident = config_identity(model, config) if config is not None else {"name": model}
        self.runs(rid, model, route, ident, [result])
        return rid

    def knows(self, rid: str) -> bool:
        """Whether ``rid`` is a recorded response's id: this recorder's, or one in the
        folder's files (an earlier run, another process; read again where they grew)."""
        with self._lock:
            if rid in self._ids:
                return True
            self._scan()
            return rid in self._ids

    def feedback(self, rid: Any, *, score: float | None = None, label: str | None = None,
                 better_answer: str | None = None, reference: str | None = None
                 ) -> dict[str, Any]:
        """Queues feedback on a recorded response (its id, or a recorded result);
        :class:`KeyError` for an unknown id. ``reference``: the verifiable right answer
        (rows for GRPO, ``aft data build records --reward``). Feedback sent in parts adds
        up: a later row's fields replace only the earlier ones it gives."""
        rid = getattr(rid, "record_id", rid)
        if not isinstance(rid, str) or not self.knows(rid):
            raise KeyError(rid)
        row = {"record": FEEDBACK_SCHEMA, "id": rid, "time": _now(), "score": score,
               "label": label, "better_answer": better_answer, "reference": reference}
        self._put("feedback", row)
        return row

    def flush(self, timeout_s: float = 30.0) -> None:
        """Waits until every row queued so far is written and on disk."""
        done = threading.Event()
        with self._lock:
            if self.closed or not self._thread.is_alive():
                return
            self._queue.put(done)
        done.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Writes what is queued, then stops the writer (rows added later are written
        at once, on the caller's thread)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True  # from here on _put writes on its caller's thread
            self._queue.put(_STOP)
        self._thread.join(timeout_s)
        while not self._thread.is_alive():  # rows the writer did not reach
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                self._write_row(*item)
            elif isinstance(item, threading.Event):
                item.set()
        atexit.unregister(self.close)
        if self.dropped:
            logger.warning("recording: %d rows were not written (the --record-max-bytes "
                           "bound was reached)", self.dropped)

    def _put(self, kind: str, row: dict[str, Any]) -> None:
        with self._lock:
            if not self.closed:
                self._queue.put((kind, row))
                return
        self._write_row(kind, row)  # after close (interpreter exit): never lost

    # -- the writer thread ---------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                self._sync()
                item.set()
                continue
            # One fsync per burst of rows, and at least every SYNC_EVERY rows.
            self._write_row(*item, sync=self._queue.empty())

    def _write_row(self, kind: str, row: dict[str, Any], sync: bool = True) -> None:
        try:
            with self._write_lock:
                self._write(kind, _line(row))
        except Exception:  # noqa: BLE001 - one bad row never stops the recording
            logger.exception("recording: a %s row could not be written", kind)
        if sync or self._unsynced >= SYNC_EVERY:
            self._sync()

    def _sync(self) -> None:
        """Every file written since the last sync, on disk (a failure is logged)."""
        with self._write_lock:
            self._unsynced = 0
            while self._dirty:
                path = self._dirty.pop()
                try:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as e:  # moved or deleted meanwhile: its rows were written
                    logger.warning("recording: could not sync %s (%s)", path, e)

    def _write(self, kind: str, line: str) -> None:
        data = line.encode()
        if self.max_bytes is not None and self._used + len(data) > self.max_bytes:
            if not self.dropped:
                logger.warning("recording paused: %s holds %d bytes, the --record-max-bytes "
                               "bound (%d); move or delete old files to go on", self.folder,
                               self._used, self.max_bytes)
            self.dropped += 1
            return
        path = self._file(kind, len(data))
        with path.open("ab") as f:
            f.write(data)
        self._dirty.add(path)
        self._unsynced += 1
        self._used += len(data)
        self.written += kind == "runs"

    def _file(self, kind: str, size: int) -> Path:
        """The file a row of ``kind`` goes to: today's, the next one past the size."""
        day = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")
        path = self._current.get(kind)
        if path is None or day not in path.name or (
                kind == "runs" and path.stat().st_size + size > self.max_file_bytes):
            if kind == "feedback":
                path = self.folder / f"feedback-{day}.jsonl"
            else:
                n = len(list(self.folder.glob(f"runs-{day}-*.jsonl")))
                path = self.folder / f"runs-{day}-{max(n, 1):03d}.jsonl"
                if path.exists() and path.stat().st_size + size > self.max_file_bytes:
                    path = self.folder / f"runs-{day}-{n + 1:03d}.jsonl"
            self._current[kind] = path
            path.touch()
        return path

    def _files(self, pattern: str) -> list[Path]:
        return sorted(self.folder.glob(f"{pattern}.jsonl"))

    def _scan(self) -> None:
        """Adds the ids in the folder's run files, reading only what is new in each
        (the id is the first field of a row; a torn last line is read again later)."""
        for path in self._files("runs-*"):
            start = self._scanned.get(path, 0)
            try:
                if path.stat().st_size <= start:
                    continue
                with path.open("rb") as f:
                    f.seek(start)
                    data = f.read()
            except OSError:
                continue
            whole = data[: data.rfind(b"\n") + 1]
            self._ids.update(m.group(1).decode("utf-8", "replace")
                             for m in map(_ID.search, whole.splitlines()) if m)
            self._scanned[path] = start + len(whole)


class _Json(str):
    """JSON text that goes into a row as it is (a result pydantic serialised)."""


def _line(row: dict[str, Any]) -> str:
    """A row as one JSON line (a serialised result goes in as it is)."""
    result = row.get("result")
    if isinstance(result, _Json):
        head = json.dumps({k: v for k, v in row.items() if k != "result"},
                          ensure_ascii=False, default=str)
        return f'{head[:-1]}, "result": {result}}}\n'
    return json.dumps(row, ensure_ascii=False, default=str) + "\n"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
