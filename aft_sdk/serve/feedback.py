"""``POST /v1/feedback`` (``aft serve --record``): a score, label or better answer on a
recorded response, kept beside the recorded runs (:mod:`aft_sdk.record`)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from aft_sdk.record import Recorder
from aft_sdk.serve.run import HTTPFailure

#: What feedback may carry beside the id (``reference``: the verifiable right answer, for
#: GRPO rows).
_FIELDS = ("score", "label", "better_answer", "reference")
#: The largest feedback body read.
FEEDBACK_BYTES = 1_000_000


def mount_feedback(app: Any, recorder: Recorder) -> None:
    """``POST /v1/feedback``: ``{"id", "score", "label", "better_answer", "reference"}`` on
    a recorded response (at least one but the id, the id a response carried). An id nothing
    recorded is a 404; the route sits behind the server's API key like the others."""
    async def feedback(request: Request) -> Any:
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > FEEDBACK_BYTES:
                raise HTTPFailure(413, f"a feedback body is at most {FEEDBACK_BYTES} bytes",
                                  "invalid_request_error", "request_too_large")
        data = _feedback_fields(bytes(body))
        rid = data.pop("id")
        try:
            row = recorder.feedback(rid, **data)
        except KeyError:
            raise HTTPFailure(404, f"no recorded response has id {rid!r:.80}: send "
                              "the id of a response this server recorded (its 'id' field)",
                              "invalid_request_error", "not_found") from None
        return {"object": "feedback", **row}

    app.add_api_route("/v1/feedback", feedback, methods=["POST"], include_in_schema=False)


def _feedback_fields(body: bytes) -> dict[str, Any]:
    """The checked fields of a feedback body; a clear 400 for anything else."""

    def bad(message: str) -> HTTPFailure:
        return HTTPFailure(400, message, "invalid_request_error")

    try:
        data = json.loads(body)
    except ValueError:
        raise bad("the feedback body is not JSON: send {\"id\": RESPONSE_ID, \"score\": 1}") \
            from None
    if not isinstance(data, dict):
        raise bad("the feedback body must be a JSON object")
    unknown = sorted(set(data) - {"id", *_FIELDS})
    if unknown:
        raise bad(f"unknown feedback fields {unknown}: send id, and score, label, "
                  "better_answer or reference")
    if not isinstance(data.get("id"), str) or not data["id"]:
        raise bad("feedback needs 'id': the id of the response it is about")
    score = data.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or score != score or score in (float("inf"), float("-inf"))):
        raise bad(f"'score' must be a finite number, got {score!r:.40}")
    for name in _FIELDS[1:]:
        if data.get(name) is not None and not isinstance(data[name], str):
            raise bad(f"'{name}' must be a string")
    if all(data.get(k) is None for k in _FIELDS):
        raise bad("feedback needs at least one of 'score', 'label', 'better_answer' or "
                  "'reference'")
    return {"id": data["id"], **{k: data[k] for k in _FIELDS if data.get(k) is not None}}
