"""The Lookout for Vision REST API over HTTP: ``create_app(service)`` -> a Starlette ASGI app.

This module only matches the route (method, ``requestUri`` and success status are the service
description's, :mod:`lvkit.operations`; this module names each operation's handler), pulls
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
* Request bodies (limits, the server-wide body budget, timeouts) and JSON bodies and their
  members are read by :mod:`lvkit.server.wire`; its docstring lists those choices. A request
  refused for the budget is answered here, ThrottlingException (429, ``Retry-After: 1``).
* With credentials, SigV4 is checked on every operation (``lvkit.server._sigv4``) before the
  body is read (key, date) and after (signature).
* A failure that is not an API error answers InternalServerException with a generic message
  and the request id; the details go to the server's log under the same id.

Must not import torch or anything that runs models; imports the service core and Starlette.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
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

from lvkit.catalog import source_from_wire
from lvkit.errors import (
    InternalServerException,
    LookoutVisionError,
    LvkitError,
    ThrottlingException,
    ValidationException,
)
from lvkit.greengrass import GreengrassConfiguration
from lvkit.operations import operation as operation_of
from lvkit.server._sigv4 import SigV4Verifier
from lvkit.server.wire import (
    BodyBudget,
    declared_size,
    json_integer,
    json_string,
    json_tags,
    parse_json_body,
    query_integer,
    read_body,
)
from lvkit.server_defaults import (
    BODY_IDLE_TIMEOUT,
    BODY_TIMEOUT,
    BUDGET_RETRY_AFTER,
    CHANGES_BODY_LIMIT,
    JSON_BODY_LIMIT,
    MAX_BODY_BYTES_IN_FLIGHT,
)
from lvkit.service import LookoutVisionService
from lvkit.shapes import tags_to_wire
from lvkit.training_jobs import output_from_wire

# the body constants and parse_json_body are re-exported: callers import them from here
__all__ = ["BODY_IDLE_TIMEOUT", "BODY_TIMEOUT", "JSON_BODY_LIMIT", "MAX_BODY_BYTES_IN_FLIGHT", "create_app",
           "parse_json_body", "render_error"]

logger = logging.getLogger("lvkit.server")

#: a handler's JSON answer, sent with its operation's success status
Answer = dict[str, Any]


# -- responses ------------------------------------------------------------------------------
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
        return query_integer(self.query(name), field)

    def json(self) -> dict[str, Any]:
        return parse_json_body(self.body)

    def string(self, body: Mapping[str, Any], name: str) -> str | None:
        return json_string(body, name)

    def integer(self, body: Mapping[str, Any], name: str) -> int | None:
        return json_integer(body, name)

    def tags(self, body: Mapping[str, Any]) -> dict[str, str]:
        return json_tags(body)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a (blocking) service method off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)


# -- handlers: one service call each, returning the JSON answer ---------------------------
async def create_project(call: Call) -> Answer:
    p = await call.run(call.service.create_project, call.string(call.json(), "ProjectName"),
                       client_token=call.header("x-amzn-client-token"))
    return {"ProjectMetadata": p.to_wire(metadata=True)}


async def list_projects(call: Call) -> Answer:
    page, token = await call.run(call.service.list_projects, next_token=call.query("nextToken"),
                                 max_results=call.query_int("maxResults", "MaxResults"))
    out: Answer = {"Projects": [p.to_wire(metadata=True) for p in page]}
    return out | ({"NextToken": token} if token else {})


async def describe_project(call: Call) -> Answer:
    p = await call.run(call.service.describe_project, call.param("projectName"))
    return {"ProjectDescription": p.to_wire()}


async def delete_project(call: Call) -> Answer:
    arn = await call.run(call.service.delete_project, call.param("projectName"),
                         client_token=call.header("x-amzn-client-token"))
    return {"ProjectArn": arn}


async def create_dataset(call: Call) -> Answer:
    body = call.json()
    source, version = source_from_wire(body.get("DatasetSource"))
    d = await call.run(call.service.create_dataset, call.param("projectName"), call.string(body, "DatasetType"),
                       source, version_id=version, client_token=call.header("x-amzn-client-token"))
    return {"DatasetMetadata": d.to_wire(metadata=True)}


async def describe_dataset(call: Call) -> Answer:
    d = await call.run(call.service.describe_dataset, call.param("projectName"), call.param("datasetType"))
    return {"DatasetDescription": d.to_wire()}


async def list_dataset_entries(call: Call) -> Answer:
    labeled = call.query("labeled")
    if labeled not in (None, "true", "false"):
        raise ValidationException(f"Labeled must be true or false, got {labeled[:16]!r}")
    entries, token = await call.run(
        call.service.list_dataset_entries, call.param("projectName"), call.param("datasetType"),
        labeled=None if labeled is None else labeled == "true", anomaly_class=call.query("anomalyClass"),
        before=call.query("createdBefore"), after=call.query("createdAfter"),
        source_ref_contains=call.query("sourceRefContains"), next_token=call.query("nextToken"),
        max_results=call.query_int("maxResults", "MaxResults"))
    out: Answer = {"DatasetEntries": entries}
    return out | ({"NextToken": token} if token else {})


async def update_dataset_entries(call: Call) -> Answer:
    changes = call.string(call.json(), "Changes")
    try:
        data = base64.b64decode(changes or "", validate=True)
    except binascii.Error:
        raise ValidationException("Changes must be base64 (as the SDKs send a blob)") from None
    status = await call.run(call.service.update_dataset_entries, call.param("projectName"),
                            call.param("datasetType"), data, client_token=call.header("x-amzn-client-token"))
    return {"Status": status.value}


async def delete_dataset(call: Call) -> Answer:
    await call.run(call.service.delete_dataset, call.param("projectName"), call.param("datasetType"),
                   client_token=call.header("x-amzn-client-token"))
    return {}


async def create_model(call: Call) -> Answer:
    body = call.json()
    if "OutputConfig" not in body:
        raise ValidationException("OutputConfig is required")
    m = await call.run(call.service.create_model, call.param("projectName"),
                       output=output_from_wire(body["OutputConfig"]), description=body.get("Description"),
                       kms_key_id=body.get("KmsKeyId"), tags=call.tags(body) if "Tags" in body else None,
                       client_token=call.header("x-amzn-client-token"))
    return {"ModelMetadata": m.to_wire(metadata=True)}


async def delete_model(call: Call) -> Answer:
    arn = await call.run(call.service.delete_model, call.param("projectName"), call.param("modelVersion"),
                         client_token=call.header("x-amzn-client-token"))
    return {"ModelArn": arn}


async def list_models(call: Call) -> Answer:
    page, token = await call.run(call.service.list_models, call.param("projectName"),
                                 next_token=call.query("nextToken"),
                                 max_results=call.query_int("maxResults", "MaxResults"))
    out: Answer = {"Models": [m.to_wire(metadata=True) for m in page]}
    return out | ({"NextToken": token} if token else {})


async def describe_model(call: Call) -> Answer:
    m = await call.run(call.service.describe_model, call.param("projectName"), call.param("modelVersion"))
    return {"ModelDescription": m.to_wire()}


async def start_model(call: Call) -> Answer:
    body = call.json()
    status = await call.run(call.service.start_model, call.param("projectName"), call.param("modelVersion"),
                            call.integer(body, "MinInferenceUnits"),
                            max_inference_units=call.integer(body, "MaxInferenceUnits"),
                            client_token=call.header("x-amzn-client-token"))
    return {"Status": status.value}


async def stop_model(call: Call) -> Answer:
    status = await call.run(call.service.stop_model, call.param("projectName"), call.param("modelVersion"),
                            client_token=call.header("x-amzn-client-token"))
    return {"Status": status.value}


async def start_model_packaging_job(call: Call) -> Answer:
    body = call.json()
    configuration = GreengrassConfiguration.from_wire(body.get("Configuration"))
    name = await call.run(call.service.start_model_packaging_job, call.param("projectName"),
                          call.string(body, "ModelVersion"), configuration, job_name=call.string(body, "JobName"),
                          description=call.string(body, "Description"),
                          client_token=call.header("x-amzn-client-token"))
    return {"JobName": name}


async def describe_model_packaging_job(call: Call) -> Answer:
    job = await call.run(call.service.describe_model_packaging_job, call.param("projectName"), call.param("jobName"))
    return {"ModelPackagingDescription": job.to_wire()}


async def list_model_packaging_jobs(call: Call) -> Answer:
    page, token = await call.run(call.service.list_model_packaging_jobs, call.param("projectName"),
                                 next_token=call.query("nextToken"),
                                 max_results=call.query_int("maxResults", "MaxResults"))
    out: Answer = {"ModelPackagingJobs": [j.to_wire(metadata=True) for j in page]}
    return out | ({"NextToken": token} if token else {})


async def detect_anomalies(call: Call) -> Answer:
    future = await call.run(call.service.submit_detect, call.param("projectName"), call.param("modelVersion"),
                            call.body, call.header("content-type"))
    result = await asyncio.wrap_future(future)  # the workers run the model; the loop stays free
    return {"DetectAnomalyResult": result.to_json()}


async def tag_resource(call: Call) -> Answer:
    tags = call.tags(call.json())
    await call.run(call.service.tag_resource, call.param("resourceArn"), tags)
    return {}


async def list_tags_for_resource(call: Call) -> Answer:
    tags = await call.run(call.service.list_tags_for_resource, call.param("resourceArn"))
    return {"Tags": tags_to_wire(tags)}


async def untag_resource(call: Call) -> Answer:
    keys = call.request.query_params.getlist("tagKeys")
    await call.run(call.service.untag_resource, call.param("resourceArn"), keys)
    return {}


Handler = Callable[[Call], Awaitable[Answer]]

#: the handler of each operation lvkit serves; the rest of each route (method, requestUri,
#: success status) is the service description's (:mod:`lvkit.operations`)
HANDLERS: dict[str, Handler] = {
    "CreateProject": create_project,
    "ListProjects": list_projects,
    "DescribeProject": describe_project,
    "DeleteProject": delete_project,
    "CreateDataset": create_dataset,
    "DescribeDataset": describe_dataset,
    "ListDatasetEntries": list_dataset_entries,
    "UpdateDatasetEntries": update_dataset_entries,
    "DeleteDataset": delete_dataset,
    "CreateModel": create_model,
    "DeleteModel": delete_model,
    "ListModels": list_models,
    "DescribeModel": describe_model,
    "StartModel": start_model,
    "StopModel": stop_model,
    "DetectAnomalies": detect_anomalies,
    "StartModelPackagingJob": start_model_packaging_job,
    "DescribeModelPackagingJob": describe_model_packaging_job,
    "ListModelPackagingJobs": list_model_packaging_jobs,
    "TagResource": tag_resource,
    "ListTagsForResource": list_tags_for_resource,
    "UntagResource": untag_resource,
}


def _route_path(request_uri: str) -> str:
    """A requestUri as a Starlette path: an ARN holds "/" (sent as %2F, which arrives decoded)."""
    return request_uri.replace("{resourceArn}", "{resourceArn:path}")


#: (method, path, operation, handler) of every route
ROUTES: list[tuple[str, str, str, Handler]] = [
    (operation_of(name).http_method, _route_path(operation_of(name).request_uri), name, handler)
    for name, handler in HANDLERS.items()
]


# -- the app --------------------------------------------------------------------------------
@dataclass
class _State:
    service: LookoutVisionService
    verifier: SigV4Verifier | None
    budget: BodyBudget
    body_timeout: float = BODY_TIMEOUT
    body_idle_timeout: float = BODY_IDLE_TIMEOUT


def _wire_url(request: Request) -> str:
    """The path and query exactly as sent (still percent-encoded), as the client signed them."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    query: bytes = request.scope.get("query_string", b"")
    return "http://lvkit" + raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


def _endpoint(operation: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    status = operation_of(operation).status  # the success status, as the description says

    async def endpoint(request: Request) -> Response:
        state: _State = request.app.state.lvkit
        request_id = str(uuid.uuid4())
        held, close = 0, False
        try:
            auth = state.verifier.precheck(request.headers, request_id=request_id) if state.verifier else None
            limit = {"DetectAnomalies": state.service.max_bytes,
                     "UpdateDatasetEntries": min(CHANGES_BODY_LIMIT, state.budget.capacity)}.get(operation,
                                                                                                 JSON_BODY_LIMIT)
            size = declared_size(request, limit)
            if not state.budget.reserve(size):
                logger.info("request %s: %s refused: %s body bytes in flight, the budget is %s", request_id,
                            operation, f"{state.budget.in_use:,}", f"{state.budget.capacity:,}")
                raise ThrottlingException("the server is receiving too many request bodies at once; "
                                          f"retry after {BUDGET_RETRY_AFTER} second",
                                          retry_after_seconds=BUDGET_RETRY_AFTER, operation_name=operation)
            held = size
            try:
                body = await read_body(request, limit, timeout=state.body_timeout,
                                       idle_timeout=state.body_idle_timeout)
            except TimeoutError as exc:
                close = True  # the client stalled: end the connection, not only the request
                logger.info("request %s: %s: %s", request_id, operation, exc)
                raise ValidationException(str(exc), operation_name=operation) from None
            if state.verifier is not None and auth is not None:
                state.verifier.verify(auth, method=request.method, url=_wire_url(request),
                                      headers=request.headers.items(), body=body, request_id=request_id)
            response = _json(await handler(Call(state.service, request, body)), status)
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
        read. At least the largest body limit (``service.max_bytes`` and 1 MiB of JSON);
        UpdateDatasetEntries' 14 MiB limit is cut to it when smaller.
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
    app.state.lvkit = _State(service, verifier, BodyBudget(max_body_bytes_in_flight), body_timeout,
                             body_idle_timeout)
    return app
