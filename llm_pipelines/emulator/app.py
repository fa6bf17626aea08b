"""The emulator's HTTP API: a WSGI app with the Messages, Message Batches and Models endpoints.

Request validation (the installed SDK's request types, :mod:`llm_pipelines.providers.contract`),
error bodies (``{"type": "error", "error": {"type", "message"}, "request_id"}``), status codes,
pagination, streaming (server-sent events) and the ``request-id`` header follow the real API,
so the official SDK's own parsing, retries, streaming and pagination run unchanged against it.
A batch's requests are checked when it is processed, as the API does: only the envelope
(``custom_id``, duplicates, count and size) is checked when it is created.
"""

from __future__ import annotations

import random
import re
import secrets
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import ijson
import orjson
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from llm_pipelines.emulator.config import EmulatorConfig, Endpoint, RareStop
from llm_pipelines.emulator.lineup import lineup
from llm_pipelines.emulator.model import RequestRefused, stream_events
from llm_pipelines.emulator.store import EmulatorStore, checked
from llm_pipelines.emulator.tokens import prompt_tokens
from llm_pipelines.providers.contract import RequestInvalid, contracts

MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",  # the SDK's error types (2.12.0) have no request_too_large
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
READ_CHUNK = 1024 * 1024
STREAM_CHUNK = 256 * 1024


class ApiError(Exception):
    """An error answered with the API's error body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class EmulatorApp:
    """The WSGI application. One instance per process; state is shared through the store."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.store = EmulatorStore(config)
        stream = self.store.next_fault_stream() if config.faults.active else 0
        self._faults = random.Random(f"{config.faults.seed}:{stream}")
        self._faults_lock = threading.Lock()
        self.faults_injected = 0
        self._routes = Map(
            [
                Rule("/v1/messages", endpoint="messages", methods=["POST"]),
                Rule("/v1/messages/count_tokens", endpoint="count_tokens", methods=["POST"]),
                Rule("/v1/models", endpoint="models_list", methods=["GET"]),
                Rule("/v1/models/<path:model_id>", endpoint="models_retrieve", methods=["GET"]),
                Rule("/v1/messages/batches", endpoint="batches_create", methods=["POST"]),
                Rule("/v1/messages/batches", endpoint="batches_list", methods=["GET"]),
                Rule(
                    "/v1/messages/batches/<batch_id>", endpoint="batches_retrieve", methods=["GET"]
                ),
                Rule(
                    "/v1/messages/batches/<batch_id>", endpoint="batches_delete", methods=["DELETE"]
                ),
                Rule(
                    "/v1/messages/batches/<batch_id>/cancel",
                    endpoint="batches_cancel",
                    methods=["POST"],
                ),
                Rule(
                    "/v1/messages/batches/<batch_id>/results",
                    endpoint="batches_results",
                    methods=["GET"],
                ),
            ]
        )

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        request_id = "req_" + secrets.token_hex(12)
        try:
            response = self._dispatch(request)
        except ApiError as error:
            response = error_response(error.status, error.message, request_id, error.headers)
        response.headers["request-id"] = request_id
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        try:
            endpoint, args = self._routes.bind_to_environ(request.environ).match()
        except NotFound:
            raise ApiError(404, f"{request.method} {request.path}: no such endpoint") from None
        except MethodNotAllowed:
            raise ApiError(405, f"{request.method} is not allowed on {request.path}") from None
        except HTTPException as error:  # pragma: no cover - werkzeug redirects and the like
            raise ApiError(error.code or 400, str(error)) from None
        if not (request.headers.get("x-api-key") or request.headers.get("authorization")):
            raise ApiError(401, "x-api-key header is required")
        self._maybe_fault(endpoint)
        handler = getattr(self, f"_{endpoint}")
        return handler(request, **args)

    # -- faults ------------------------------------------------------------------------------

    def _maybe_fault(self, endpoint: Endpoint) -> None:
        plan = self.config.faults
        rate = plan.error_rate(endpoint)
        if not rate:
            return
        with self._faults_lock:
            if self._faults.random() >= rate:
                return
            status = self._faults.choice(plan.http_statuses)
            self.faults_injected += 1
        self.store.record_faults(f"http_{status}")
        headers = {"retry-after-ms": str(plan.retry_after_ms)} if plan.retry_after_ms else {}
        raise ApiError(status, f"emulated fault on {endpoint}", headers)

    def _truncate_results(self) -> bool:
        rate = self.config.faults.truncated_results_rate
        if not rate:
            return False
        with self._faults_lock:
            cut = self._faults.random() < rate
            self.faults_injected += cut
        if cut:
            self.store.record_faults("truncated_results")
        return cut

    # -- messages ----------------------------------------------------------------------------

    def _messages(self, request: Request) -> Response:
        body = read_json_body(request, MAX_MESSAGE_BYTES)
        message, entry = _checked(body, contracts().message.validate)
        with self.store.model_state() as state:
            try:
                reply = state.respond(
                    message, entry, self.store.now(), "standard", self._rare_stop()
                )
            except RequestRefused as error:
                raise ApiError(error.status, str(error)) from None
        self.store.record_answered_message(body)
        if message.get("stream"):
            return Response(stream_events(reply), status=200, content_type="text/event-stream")
        return json_response(reply)

    def _rare_stop(self) -> RareStop | None:
        plan = self.config.faults
        if not plan.stop_reason_rates:
            return None
        with self._faults_lock:
            reason = plan.rare_stop(self._faults.random())
        if reason is not None:
            self.store.record_faults(f"stop_{reason}")
        return reason

    def _count_tokens(self, request: Request) -> Response:
        body = read_json_body(request, MAX_MESSAGE_BYTES)
        counted, _ = _checked(body, contracts().count_tokens.validate)
        return json_response({"input_tokens": prompt_tokens(counted)})

    # -- models ------------------------------------------------------------------------------

    def _models_list(self, request: Request) -> Response:
        limit = page_limit(request)
        wanted = set(request.args.getlist("lifecycle") + request.args.getlist("lifecycle[]"))
        wanted = {w for value in wanted for w in value.split(",")} or {"active", "deprecated"}
        unknown = wanted - {"active", "deprecated", "retired"}
        if unknown:
            raise ApiError(400, f"lifecycle: {sorted(unknown)[0]!r} is not a lifecycle stage")
        ids = [m.id for m in lineup().models if m.lifecycle in wanted]  # newest first
        page, has_more = paginate(
            ids, limit, request.args.get("after_id"), request.args.get("before_id")
        )
        return json_response(
            {
                "data": [lineup().get(i).to_api() for i in page],  # type: ignore[union-attr]
                "has_more": has_more,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    def _models_retrieve(self, request: Request, model_id: str) -> Response:
        entry = lineup().get(model_id)
        if entry is None:
            raise ApiError(404, f"model: {model_id}")
        return json_response(entry.to_api())

    # -- batches -----------------------------------------------------------------------------

    def _batches_create(self, request: Request) -> Response:
        staged = self.store.staging_file()
        try:
            count = self._stage_requests(request, staged)
            record = self.store.create_batch(staged, count)
        finally:
            staged.unlink(missing_ok=True)
        return json_response(record.to_api(base_url(request)))

    def _stage_requests(self, request: Request, staged: Any) -> int:
        """Validate the body's requests one at a time, writing them to ``staged``.

        The body is spooled to disk and parsed incrementally, so a 256 MB batch never sits
        in memory as Python objects.
        """
        with tempfile.SpooledTemporaryFile(max_size=8 * READ_CHUNK) as body:
            size = 0
            while chunk := request.stream.read(READ_CHUNK):
                size += len(chunk)
                if size > MAX_BATCH_BYTES:
                    raise ApiError(
                        413, f"request body exceeds the batch limit of {MAX_BATCH_BYTES:,} bytes"
                    )
                body.write(chunk)
            body.seek(0)
            seen: set[str] = set()
            with open(staged, "wb") as sink:
                try:
                    for index, item in enumerate(
                        ijson.items(body, "requests.item", use_float=True)
                    ):
                        if index >= MAX_BATCH_REQUESTS:
                            raise ApiError(
                                400,
                                f"requests: a batch holds at most {MAX_BATCH_REQUESTS:,} requests",
                            )
                        sink.write(batch_line(item, index, seen))
                except ijson.JSONError as error:
                    raise ApiError(400, f"request body is not valid JSON: {error}") from None
        if not seen:
            raise ApiError(400, "requests: must be a non-empty list of requests")
        return len(seen)

    def _batches_list(self, request: Request) -> Response:
        limit = page_limit(request)
        ids = self.store.list_batch_ids()  # newest first
        page, has_more = paginate(
            ids, limit, request.args.get("after_id"), request.args.get("before_id")
        )
        url = base_url(request)
        data = [self.store.get_batch(i).to_api(url) for i in page]
        return json_response(
            {
                "data": data,
                "has_more": has_more,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    def _require(self, batch_id: str) -> None:
        if not self.store.exists(batch_id):
            raise ApiError(404, f"message batch {batch_id!r} not found")

    def _batches_retrieve(self, request: Request, batch_id: str) -> Response:
        self._require(batch_id)
        return json_response(self.store.get_batch(batch_id).to_api(base_url(request)))

    def _batches_cancel(self, request: Request, batch_id: str) -> Response:
        self._require(batch_id)
        self.store.get_batch(batch_id)  # one that is already due ends first
        return json_response(self.store.cancel_batch(batch_id).to_api(base_url(request)))

    def _batches_delete(self, request: Request, batch_id: str) -> Response:
        self._require(batch_id)
        if self.store.get_batch(batch_id).processing_status != "ended":
            raise ApiError(
                400, f"message batch {batch_id} is still processing; cancel it before deleting"
            )
        self.store.delete_batch(batch_id)
        return json_response({"id": batch_id, "type": "message_batch_deleted"})

    def _batches_results(self, request: Request, batch_id: str) -> Response:
        self._require(batch_id)
        record = self.store.get_batch(batch_id)
        if record.processing_status != "ended":
            raise ApiError(
                400,
                f"message batch {batch_id} has not ended (processing_status "
                f"{record.processing_status!r}); results are available once it has",
            )
        path = self.store.results_path(batch_id)
        cut_at = (
            random.Random(batch_id + secrets.token_hex(4)).randrange(record.request_count)
            if self._truncate_results()
            else None
        )
        return Response(stream_lines(path, cut_at), status=200, content_type="application/x-jsonl")


def batch_line(item: Any, index: int, seen: set[str]) -> bytes:
    """One request of a batch body, its envelope checked, as a stored JSON line.

    Only the envelope: its ``params`` are checked when the batch is processed (an invalid
    request becomes an errored result, as on the API).
    """
    where = f"requests.{index}."
    if not isinstance(item, dict):
        raise ApiError(400, f"requests.{index}: must be an object")
    extra = set(item) - {"custom_id", "params"}
    if extra:
        raise ApiError(400, f"{where}{sorted(extra)[0]}: Extra inputs are not permitted")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
        raise ApiError(400, f"{where}custom_id: {custom_id!r} must match ^[a-zA-Z0-9_-]{{1,64}}$")
    if custom_id in seen:
        raise ApiError(
            400, f"{where}custom_id: {custom_id!r} is used twice; custom_id must be unique"
        )
    if "params" not in item:
        raise ApiError(400, f"{where}params: Field required")
    seen.add(custom_id)
    return orjson.dumps({"custom_id": custom_id, "params": item["params"]}) + b"\n"


def _checked(body: Any, validate: Any) -> tuple[dict[str, Any], Any]:
    """A request body checked as the API checks it, or the API's error."""
    try:
        return checked(body, validate)
    except RequestInvalid as error:
        raise ApiError(400, str(error)) from None
    except RequestRefused as error:
        raise ApiError(error.status, str(error)) from None


def page_limit(request: Request) -> int:
    """The ``limit`` query parameter of a list call (1 to 1000, 20 by default)."""
    try:
        limit = int(request.args.get("limit", 20))
    except ValueError:
        raise ApiError(400, "limit: must be an integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "limit: must be between 1 and 1000")
    return limit


def paginate(
    ids: list[str], limit: int, after: str | None, before: str | None
) -> tuple[list[str], bool]:
    """A page of ``ids`` (listed newest first) after or before a cursor, and whether more exist."""
    if after and after in ids:
        rest = ids[ids.index(after) + 1 :]
        return rest[:limit], len(rest) > limit
    if before and before in ids:
        rest = ids[: ids.index(before)]
        return rest[-limit:], len(rest) > limit
    return ids[:limit], len(ids) > limit


def stream_lines(path: Any, cut_at: int | None) -> Iterator[bytes]:
    """Result lines in bounded chunks; with ``cut_at``, the connection drops mid-line there."""
    if cut_at is None:
        # The usual case: the file as it is, a chunk at a time (never whole in memory).
        with open(path, "rb") as handle:
            while chunk := handle.read(STREAM_CHUNK):
                yield chunk
        return
    buffer = bytearray()
    with open(path, "rb") as handle:
        for index, line in enumerate(handle):
            if index == cut_at:
                yield bytes(buffer) + line[: len(line) // 2]
                # What a client sees when the server goes away mid-body.
                raise httpx2.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            buffer += line
            if len(buffer) >= STREAM_CHUNK:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)


def read_json_body(request: Request, limit: int) -> Any:
    """A whole (bounded) JSON body."""
    if request.content_length and request.content_length > limit:
        raise ApiError(413, f"request body exceeds {limit:,} bytes")
    data = request.get_data(cache=False)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"request body is not valid JSON: {error}") from None


def base_url(request: Request) -> str:
    """Scheme and host the client used, for ``results_url``."""
    return request.host_url.rstrip("/")


def json_response(value: Any, status: int = 200) -> Response:
    """A JSON response."""
    return Response(orjson.dumps(value), status=status, content_type="application/json")


def error_response(
    status: int, message: str, request_id: str, headers: dict[str, str] | None = None
) -> Response:
    """The API's error body (an ``ErrorResponse``) for ``status``."""
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id,
    }
    response = json_response(body, status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
