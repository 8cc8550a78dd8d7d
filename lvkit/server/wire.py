"""Reading requests off the wire: body limits, the server-wide body budget, JSON bodies and their members.

:func:`declared_size` and :func:`read_body` take a request's body under its operation's limit
and the body timeouts; :class:`BodyBudget` counts the body bytes the server holds at once;
:func:`parse_json_body` turns a body into a JSON object and the getters (:func:`json_string`,
:func:`json_integer`, :func:`json_tags`, :func:`query_integer`) type its members. Every refusal
is a ValidationException; :mod:`lvkit.server.app` renders them and answers the budget's 429.

Choices where the public material is silent:

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

The limits' values are :mod:`lvkit.server_defaults`' (re-exported here).

Imports ``lvkit.errors``, ``lvkit.server_defaults``, ``lvkit.shapes``' tag conversion and
Starlette's request only.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections.abc import Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request

from lvkit.errors import ValidationException
from lvkit.server_defaults import (
    BODY_IDLE_TIMEOUT,
    BODY_TIMEOUT,
    BUDGET_RETRY_AFTER,
    JSON_BODY_LIMIT,
    MAX_BODY_BYTES_IN_FLIGHT,
)
from lvkit.shapes import tags_from_wire

__all__ = ["BODY_IDLE_TIMEOUT", "BODY_TIMEOUT", "BUDGET_RETRY_AFTER", "JSON_BODY_LIMIT",
           "MAX_BODY_BYTES_IN_FLIGHT", "BodyBudget", "declared_size", "json_integer", "json_string", "json_tags",
           "parse_json_body", "query_integer", "read_body"]


# -- bodies: limits, budget, timeouts -------------------------------------------------------
class BodyBudget:
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


def declared_size(request: Request, limit: int) -> int:
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


async def read_body(request: Request, limit: int, *, timeout: float, idle_timeout: float) -> bytes:
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


# -- typed members of a JSON body, and numeric query parameters ----------------------------
def json_string(body: Mapping[str, Any], name: str) -> str | None:
    """Member ``name`` of ``body``: a string, or None when absent or null."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ValidationException(f"{name} must be a string, got {_json_kind(value)}")
    return value


def json_integer(body: Mapping[str, Any], name: str) -> int | None:
    """Member ``name`` of ``body``: a 32-bit integer (the API's Integer), or None when absent or null.

    >>> json_integer({"MinInferenceUnits": 2}, "MinInferenceUnits"), json_integer({}, "MaxInferenceUnits")
    (2, None)
    >>> json_integer({"MinInferenceUnits": True}, "MinInferenceUnits")
    Traceback (most recent call last):
    ...
    lvkit.errors.ValidationException: ... MinInferenceUnits must be an integer, got a boolean
    """
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationException(f"{name} must be an integer, got {_json_kind(value)}")
    if not -2**31 <= value < 2**31:
        raise ValidationException(f"{name} must be a 32-bit integer, got {value}")
    return value


def json_tags(body: Mapping[str, Any]) -> dict[str, str]:
    """Member ``Tags``: a list of ``{"Key": string, "Value": string}``."""
    tags = body.get("Tags")
    if isinstance(tags, list) and not all(
            isinstance(t, dict) and isinstance(t.get("Key"), str) and isinstance(t.get("Value"), str)
            for t in tags):
        raise ValidationException('Tags must be a list of {"Key": string, "Value": string}')
    return tags_from_wire(tags)


def query_integer(value: str | None, field: str) -> int | None:
    """A query parameter's integer (``field`` names it in messages), or None when absent."""
    if value is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,10}", value, re.ASCII):  # int() also takes "١", "1_0" and " 1"
        raise ValidationException(f"{field} must be an integer, got {value[:32]!r}")
    return int(value)
