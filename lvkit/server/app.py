"""The Lookout for Vision REST API over HTTP: ``create_app(service)`` -> a Starlette ASGI app.

This module only matches the route (the table mirrors each operation's ``requestUri``), pulls
out path parameters, headers and body, calls one service method and serialises; the
behaviour is :class:`~lvkit.service.LookoutVisionService`'s. Wire form (rest-json): JSON
bodies with PascalCase keys, camelCase URI and query parameters, timestamps as epoch
seconds, DetectAnomalies' raw image body typed by ``Content-Type`` and its ``AnomalyMask``
base64 in the JSON answer, ``X-Amzn-Client-Token`` for idempotency.

Errors are rendered in one place (:func:`render_error`): the error's HTTP status,
``x-amzn-ErrorType: <Code>``, a JSON body ``{"__type", "message", "Message", extra members}``
and ``Retry-After`` when the error carries one. Every response has ``x-amzn-RequestId``.

Choices where the public material is silent:

* An unknown path answers 404 and a known path with another method 405 (with ``Allow``), both
  as ``UnknownOperationException`` in the same error form, never an HTML page.
* Every malformed JSON body is a ValidationException, never a 500: not UTF-8, not JSON, not
  an object, nested too deeply, duplicate keys, ``NaN``/``Infinity``, numbers beyond 64 bits or
  a float's range, lone surrogates, a member of the wrong JSON type (``MinInferenceUnits`` must
  be a 32-bit integer, ``ProjectName`` a string, ``Tags`` a list of ``{"Key", "Value"}``
  strings). A query parameter that is not a number where one is expected is one too.
* Request bodies are limited before they are read whole: DetectAnomalies to the service's
  ``max_bytes`` (default 8 MiB), other operations to 1 MiB. ``Content-Length`` is checked
  first, then the stream is counted as it arrives.
* Memory for bodies is bounded server-wide: a request reserves its ``Content-Length`` (its
  operation's limit when the length is not declared) from ``max_body_bytes_in_flight``
  (default 256 MiB) until it is answered; when that would exceed the budget it is answered
  ThrottlingException (429, ``Retry-After: 1``) before its body is read. A body must arrive
  within ``body_timeout`` seconds (default 120) with no gap over ``body_idle_timeout``
  (default 15): a stalled upload is answered ValidationException and its connection closed.
* With credentials, SigV4 is checked on every operation (``lvkit.server._sigv4``) before the
  body is read (key, date) and after (signature).
* A failure that is not an API error answers InternalServerException with a generic message
  and the request id; the details go to the server's log under the same id.

Must not import torch or anything that runs models; imports the service core and Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from lvkit.client import tags_from_wire
from lvkit.errors import (InternalServerException, LookoutVisionError, LvkitError, ThrottlingException,
                          ValidationException)
from lvkit.server._sigv4 import SigV4Verifier
from lvkit.service import LookoutVisionService

__all__ = ["BODY_IDLE_TIMEOUT", "BODY_TIMEOUT", "JSON_BODY_LIMIT", "MAX_BODY_BYTES_IN_FLIGHT", "create_app",
           "render_error"]

logger = logging.getLogger("lvkit.server")

#: body limit of the operations that take JSON
JSON_BODY_LIMIT = 1024 * 1024
#: default budget of request body bytes the server holds at once (32 DetectAnomalies bodies of 8 MiB)
MAX_BODY_BYTES_IN_FLIGHT = 256 * 1024 * 1024
#: default seconds a whole body may take to arrive (8 MiB at about 0.5 Mbit/s)
BODY_TIMEOUT = 120.0
#: default seconds a body may go without a byte arriving
BODY_IDLE_TIMEOUT = 15.0
#: seconds a client refused for the body budget is told to wait (``Retry-After``)
_BUDGET_RETRY_AFTER = 1

_P = "/2020-11-20/projects"
_M = _P + "/{projectName}/models/{modelVersion}"
_T = "/2020-11-20/tags/{resourceArn:path}"


# -- wire helpers ---------------------------------------------------------------------------
def _json(data: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":")).encode()  # ASCII escapes: any str encodes
    return Response(body, status_code=status, headers=dict(headers or {}), media_type="application/json")


def _error(status: int, code: str, message: str, members: Mapping[str, Any] | None = None,
           headers: Mapping[str, str] | None = None) -> Response:
    body = {"__type": code, "message": message, "Message": message, **(members or {})}
    return _json(body, status, {"x-amzn-ErrorType": code, **(headers or {})})


def render_error(exc: LookoutVisionError) -> Response:
    """The one rendering of an API error: status, ``x-amzn-ErrorType``, JSON body, ``Retry-After``."""
    retry = getattr(exc, "retry_after_seconds", None)
    return _error(exc.http_status, exc.code, exc.message, exc.wire_members(),
                  {"Retry-After": str(int(retry))} if retry is not None else None)


class _BodyBudget:
    """The bytes of request bodies the server holds at once, received or being served."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        """Take ``size`` bytes if they fit; a request of no body always fits."""
        with self._lock:
            if size and self.in_use + size > self.capacity:
                return False
            self.in_use += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.in_use -= size


def _declared_size(request: Request, limit: int) -> int:
    """The body size to reserve: ``Content-Length``, ``limit`` when chunked, 0 for no body.

    ValidationException when the declared length already exceeds ``limit``.
    """
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise ValidationException(f"Content-Length {length[:32]!r} is not a number of bytes")
        if int(length) > limit:
            raise ValidationException(f"Body is {int(length):,} bytes; the limit is {limit:,} bytes")
        return int(length)
    return limit if "chunked" in request.headers.get("transfer-encoding", "").lower() else 0


async def _read_body(request: Request, limit: int, *, timeout: float, idle_timeout: float) -> bytes:
    """The body, refused with ValidationException as soon as it is known to exceed ``limit``.

    Raises TimeoutError when the whole body takes over ``timeout`` seconds or no byte comes
    for ``idle_timeout`` seconds, ClientDisconnect when the client goes away.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    chunks, total = [], 0
    while True:
        wait = min(idle_timeout, deadline - loop.time())
        try:
            if wait <= 0:
                raise asyncio.TimeoutError
            message = await asyncio.wait_for(request.receive(), wait)
        except asyncio.TimeoutError:
            why = (f"no byte of it came for {idle_timeout:g} seconds" if wait == idle_timeout
                   else f"it took more than {timeout:g} seconds")
            raise TimeoutError(f"the request body did not arrive in time: {why} ({total:,} bytes came)") from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise ValidationException(f"Body is more than {limit:,} bytes; the limit is {limit:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# -- JSON bodies: every malformed one a ValidationException -------------------------------
def _json_kind(value: object) -> str:
    """The JSON type of a parsed value, for messages."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 19 or not -2**63 <= int(text) < 2**63:  # length first: int() of 4,000 digits
        raise ValidationException(f"the request body holds the number {text[:24]}..., beyond 64 bits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValidationException(f"the request body holds the number {text[:24]}, beyond a float's range")
    return value


def _parse_constant(name: str) -> float:
    raise ValidationException(f"the request body holds {name}, which is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValidationException(f"the request body repeats the key {key[:64]!r} in one object")
        out[key] = value
    return out


def _check_text(data: object) -> None:
    """Every string encodes as UTF-8 (JSON's ``\\ud800`` escapes can make lone surrogates)."""
    stack = [data]
    while stack:  # a loop, not recursion: the parser allows deep nesting
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                raise ValidationException("the request body holds a string with a lone surrogate "
                                          "(a \\uD800-\\uDFFF escape outside a pair)") from None
        elif isinstance(item, dict):
            stack += [*item, *item.values()]
        elif isinstance(item, list):
            stack += item


def parse_json_body(body: bytes) -> dict[str, Any]:
    """A request's JSON object; ValidationException for anything else, never another error.

    >>> parse_json_body(b'{"MinInferenceUnits": 1}')
    {'MinInferenceUnits': 1}
    >>> parse_json_body(b'{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    lvkit.errors.ValidationException: ... the request body repeats the key 'a' in one object
    """
    if not body.strip():
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationException(f"the request body is not UTF-8 text (byte {exc.start} is not)") from None
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant,
                          object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValidationException("the request body nests arrays or objects too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or int() past its digit limit
        raise ValidationException(f"the request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ValidationException("the request body must be a JSON object")
    _check_text(data)
    return data


@dataclass
class Call:
    """One request, as the handlers see it: path parameters, query, headers, body."""

    service: LookoutVisionService
    request: Request
    body: bytes

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)

    def query(self, name: str) -> str | None:
        return self.request.query_params.get(name)

    def query_int(self, name: str, field: str) -> int | None:
        value = self.query(name)
        if value is None:
            return None
        if not re.fullmatch(r"-?[0-9]{1,10}", value, re.ASCII):  # int() also takes "١", "1_0" and " 1"
            raise ValidationException(f"{field} must be an integer, got {value[:32]!r}")
        return int(value)

    def json(self) -> dict[str, Any]:
        return parse_json_body(self.body)

    def string(self, body: Mapping[str, Any], name: str) -> str | None:
        """Member ``name`` of ``body``: a string, or None when absent or null."""
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise ValidationException(f"{name} must be a string, got {_json_kind(value)}")
        return value

    def integer(self, body: Mapping[str, Any], name: str) -> int | None:
        """Member ``name`` of ``body``: a 32-bit integer (the API's Integer), or None when absent or null."""
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationException(f"{name} must be an integer, got {_json_kind(value)}")
        if not -2**31 <= value < 2**31:
            raise ValidationException(f"{name} must be a 32-bit integer, got {value}")
        return value

    def tags(self, body: Mapping[str, Any]) -> dict[str, str]:
        """Member ``Tags``: a list of ``{"Key": string, "Value": string}``."""
        tags = body.get("Tags")
        if isinstance(tags, list) and not all(
                isinstance(t, dict) and isinstance(t.get("Key"), str) and isinstance(t.get("Value"), str)
                for t in tags):
            raise ValidationException('Tags must be a list of {"Key": string, "Value": string}')
        return tags_from_wire(tags)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a (blocking) service method off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)


# -- handlers: one service call each --------------------------------------------------------
async def create_project(call: Call) -> Response:
    p = await call.run(call.service.create_project, call.string(call.json(), "ProjectName"),
                       client_token=call.header("x-amzn-client-token"))
    return _json({"ProjectMetadata": p.to_wire(metadata=True)})


async def list_projects(call: Call) -> Response:
    page, token = await call.run(call.service.list_projects, next_token=call.query("nextToken"),
                                 max_results=call.query_int("maxResults", "MaxResults"))
    out = {"Projects": [p.to_wire(metadata=True) for p in page]}
    return _json(out | ({"NextToken": token} if token else {}))


async def describe_project(call: Call) -> Response:
    p = await call.run(call.service.describe_project, call.param("projectName"))
    return _json({"ProjectDescription": p.to_wire()})


async def delete_project(call: Call) -> Response:
    arn = await call.run(call.service.delete_project, call.param("projectName"),
                         client_token=call.header("x-amzn-client-token"))
    return _json({"ProjectArn": arn})


async def list_models(call: Call) -> Response:
    page, token = await call.run(call.service.list_models, call.param("projectName"),
                                 next_token=call.query("nextToken"),
                                 max_results=call.query_int("maxResults", "MaxResults"))
    out = {"Models": [m.to_wire(metadata=True) for m in page]}
    return _json(out | ({"NextToken": token} if token else {}))


async def describe_model(call: Call) -> Response:
    m = await call.run(call.service.describe_model, call.param("projectName"), call.param("modelVersion"))
    return _json({"ModelDescription": m.to_wire()})


async def start_model(call: Call) -> Response:
    body = call.json()
    status = await call.run(call.service.start_model, call.param("projectName"), call.param("modelVersion"),
                            call.integer(body, "MinInferenceUnits"),
                            max_inference_units=call.integer(body, "MaxInferenceUnits"),
                            client_token=call.header("x-amzn-client-token"))
    return _json({"Status": status}, 202)


async def stop_model(call: Call) -> Response:
    status = await call.run(call.service.stop_model, call.param("projectName"), call.param("modelVersion"),
                            client_token=call.header("x-amzn-client-token"))
    return _json({"Status": status}, 202)


async def detect_anomalies(call: Call) -> Response:
    future = await call.run(call.service.submit_detect, call.param("projectName"), call.param("modelVersion"),
                            call.body, call.header("content-type"))
    result = await asyncio.wrap_future(future)  # the workers run the model; the loop stays free
    return _json({"DetectAnomalyResult": result.to_json()})


async def tag_resource(call: Call) -> Response:
    tags = call.tags(call.json())
    await call.run(call.service.tag_resource, call.param("resourceArn"), tags)
    return _json({})


async def list_tags_for_resource(call: Call) -> Response:
    tags = await call.run(call.service.list_tags_for_resource, call.param("resourceArn"))
    return _json({"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]})


async def untag_resource(call: Call) -> Response:
    keys = call.request.query_params.getlist("tagKeys")
    await call.run(call.service.untag_resource, call.param("resourceArn"), keys)
    return _json({})


Handler = Callable[[Call], Awaitable[Response]]

#: (method, requestUri, operation, handler), as in the service description
ROUTES: list[tuple[str, str, str, Handler]] = [
    ("POST", _P, "CreateProject", create_project),
    ("GET", _P, "ListProjects", list_projects),
    ("GET", _P + "/{projectName}", "DescribeProject", describe_project),
    ("DELETE", _P + "/{projectName}", "DeleteProject", delete_project),
    ("GET", _P + "/{projectName}/models", "ListModels", list_models),
    ("GET", _M, "DescribeModel", describe_model),
    ("POST", _M + "/start", "StartModel", start_model),
    ("POST", _M + "/stop", "StopModel", stop_model),
    ("POST", _M + "/detect", "DetectAnomalies", detect_anomalies),
    ("POST", _T, "TagResource", tag_resource),
    ("GET", _T, "ListTagsForResource", list_tags_for_resource),
    ("DELETE", _T, "UntagResource", untag_resource),
]


# -- the app --------------------------------------------------------------------------------
@dataclass
class _State:
    service: LookoutVisionService
    verifier: SigV4Verifier | None
    budget: _BodyBudget
    body_timeout: float = BODY_TIMEOUT
    body_idle_timeout: float = BODY_IDLE_TIMEOUT


def _wire_url(request: Request) -> str:
    """The path and query exactly as sent (still percent-encoded), as the client signed them."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    query: bytes = request.scope.get("query_string", b"")
    return "http://lvkit" + raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


def _endpoint(operation: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state: _State = request.app.state.lvkit
        request_id = str(uuid.uuid4())
        held, close = 0, False
        try:
            auth = state.verifier.precheck(request.headers, request_id=request_id) if state.verifier else None
            limit = state.service.max_bytes if operation == "DetectAnomalies" else JSON_BODY_LIMIT
            size = _declared_size(request, limit)
            if not state.budget.reserve(size):
                logger.info("request %s: %s refused: %s body bytes in flight, the budget is %s", request_id,
                            operation, f"{state.budget.in_use:,}", f"{state.budget.capacity:,}")
                raise ThrottlingException("the server is receiving too many request bodies at once; "
                                          f"retry after {_BUDGET_RETRY_AFTER} second",
                                          retry_after_seconds=_BUDGET_RETRY_AFTER, operation_name=operation)
            held = size
            try:
                body = await _read_body(request, limit, timeout=state.body_timeout,
                                        idle_timeout=state.body_idle_timeout)
            except TimeoutError as exc:
                close = True  # the client stalled: end the connection, not only the request
                logger.info("request %s: %s: %s", request_id, operation, exc)
                raise ValidationException(str(exc), operation_name=operation) from None
            if state.verifier is not None and auth is not None:
                state.verifier.verify(auth, method=request.method, url=_wire_url(request),
                                      headers=request.headers.items(), body=body, request_id=request_id)
            response = await handler(Call(state.service, request, body))
        except LookoutVisionError as exc:
            response = render_error(exc)
        except ClientDisconnect:  # nobody to answer; the response below goes nowhere
            logger.info("request %s: %s: the client went away while sending the body", request_id, operation)
            response, close = render_error(ValidationException("the client disconnected")), True
        except Exception:  # the catch-all: the details to the log, a generic 500 to the client
            logger.exception("request %s: %s failed", request_id, operation)
            response = render_error(InternalServerException(
                f"{operation} failed on an internal error (request id {request_id}); "
                "the server's log has the details"))
        finally:
            state.budget.release(held)
        response.headers["x-amzn-RequestId"] = request_id
        if close:
            response.headers["Connection"] = "close"
        return response

    endpoint.__name__ = operation
    return endpoint


async def _unknown_route(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        message = f"{request.url.path} does not accept {request.method}; it accepts {allow}"
    else:
        message = f"no Lookout for Vision operation is {request.method} {request.url.path}"
    response = _error(exc.status_code, "UnknownOperationException", message, headers=exc.headers)
    response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
    return response


def create_app(service: LookoutVisionService, *, credentials: Mapping[str, str] | None = None,
               rehost: bool = True, max_body_bytes_in_flight: int = MAX_BODY_BYTES_IN_FLIGHT,
               body_timeout: float = BODY_TIMEOUT, body_idle_timeout: float = BODY_IDLE_TIMEOUT) -> Starlette:
    """The ASGI app serving ``service``'s operations over HTTP.

    Parameters
    ----------
    service : LookoutVisionService
        The core; build it with ``wait=False`` and :class:`~lvkit.hosting.HostingOptions` for
        the service's asynchronous hosting and real capacity (``lvkit serve`` does).
    credentials : mapping, optional
        Access key id -> secret; when given every request must carry a valid SigV4 signature.
    rehost : bool, default True
        At startup, host again the versions the store says are HOSTED (``service.rehost()``).
    max_body_bytes_in_flight : int, default 256 MiB
        Request body bytes the server holds at once (each request reserves its
        ``Content-Length``, or its operation's limit when undeclared, until it is answered);
        a request that does not fit is answered ThrottlingException (429) before its body is
        read. At least the largest body limit (``service.max_bytes`` and 1 MiB).
    body_timeout, body_idle_timeout : float, default 120 and 15
        Seconds a whole request body may take to arrive, and may go without a byte arriving;
        past either the request is answered ValidationException and its connection closed.

    Examples
    --------
    >>> import tempfile
    >>> from starlette.testclient import TestClient
    >>> app = create_app(LookoutVisionService(tempfile.mkdtemp()))
    >>> r = TestClient(app).get("/2020-11-20/projects/nope")
    >>> r.status_code, r.headers["x-amzn-ErrorType"], r.json()["ResourceType"]
    (404, 'ResourceNotFoundException', 'PROJECT')
    """
    largest = max(service.max_bytes, JSON_BODY_LIMIT)
    if max_body_bytes_in_flight < largest:
        raise LvkitError(f"the body budget ({max_body_bytes_in_flight:,} bytes in flight) must hold at least "
                         f"one body of the largest limit ({largest:,} bytes)")
    if not (body_timeout > 0 and body_idle_timeout > 0):
        raise LvkitError(f"body timeouts must be positive, got {body_timeout} and {body_idle_timeout}")
    verifier = SigV4Verifier(credentials) if credentials else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.store.claim_server()  # one serving process per home: a second one stops here
        if not service.store.writable:
            logger.warning("this home is read-only: serving reads and DetectAnomalies on HOSTED models; "
                           "changes answer InternalServerException")
        if rehost:
            hosted = await run_in_threadpool(service.rehost)
            if hosted:
                logger.info("hosting again: %s", ", ".join(f"{p}/{v}" for p, v in hosted))
        yield

    routes = [Route(path, _endpoint(op, handler), methods=[method]) for method, path, op, handler in ROUTES]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _unknown_route}, lifespan=lifespan)
    app.router.redirect_slashes = False  # "/projects/" is an unknown route, not a redirect
    app.state.lvkit = _State(service, verifier, _BodyBudget(max_body_bytes_in_flight), body_timeout,
                             body_idle_timeout)
    return app
