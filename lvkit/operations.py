"""The API's operations, read from the service description lvkit ships: names, HTTP bindings, parameters.

``lvkit/data/lookoutvision/2020-11-20/service-2.json`` (the botocore model that
:mod:`lvkit.boto` registers: botocore 1.40.60's, the last release that shipped one) is the one source of the operation
table. :mod:`lvkit.client` takes from it each operation's parameters (required and optional,
in the description's order, as botocore checks them) and success status; :mod:`lvkit.server`
takes each route's HTTP method, ``requestUri`` and success status. Both write by hand only
what the description cannot say: which service method an operation calls.

:data:`NOT_IMPLEMENTED` names the operations of the description that lvkit does not serve.
Tests check that the client's methods and the server's routes, together with it, are the
description's operations exactly.

Imports :mod:`lvkit.boto` (its data folder; boto3 is not imported) and botocore's
``xform_name`` only.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from botocore import xform_name

from lvkit.boto import DATA_PATH

__all__ = ["NOT_IMPLEMENTED", "Operation", "operation", "operations", "paginated", "service_description"]

_MODEL_DIR = Path(DATA_PATH, "lookoutvision", "2020-11-20")

#: operations of the service description that lvkit does not serve (the description is
#: botocore 1.40.60's, all 22 operations): none since issue 9; any would be listed here, and nowhere else
NOT_IMPLEMENTED: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the service description.

    Parameters
    ----------
    name : str
        The operation, e.g. ``"StartModel"``.
    http_method : str
        ``"GET"``, ``"POST"``, ``"DELETE"``, ...
    request_uri : str
        The description's ``requestUri``, e.g. ``"/2020-11-20/projects/{projectName}"``.
    status : int
        The HTTP status of a success (the description's ``responseCode``, default 200).
    members : tuple of str
        The input members, in the description's order (what botocore checks a call against).
    required : tuple of str
        The members a call must give.

    Examples
    --------
    >>> op = operation("StartModel")
    >>> op.method_name, op.http_method, op.status, op.required
    ('start_model', 'POST', 202, ('ProjectName', 'ModelVersion', 'MinInferenceUnits'))
    """

    name: str
    http_method: str
    request_uri: str
    status: int
    members: tuple[str, ...]
    required: tuple[str, ...]

    @property
    def method_name(self) -> str:
        """The boto3 client method (and :class:`~lvkit.service.LookoutVisionService` method) name."""
        return str(xform_name(self.name))

    @property
    def optional(self) -> tuple[str, ...]:
        """The members a call may leave out."""
        return tuple(m for m in self.members if m not in self.required)


@functools.cache
def service_description() -> Mapping[str, Any]:
    """The parsed ``service-2.json`` lvkit ships (read once)."""
    return MappingProxyType(json.loads((_MODEL_DIR / "service-2.json").read_text()))


@functools.cache
def operations() -> Mapping[str, Operation]:
    """Every operation of the service description, by name (those in :data:`NOT_IMPLEMENTED` too)."""
    model = service_description()
    out: dict[str, Operation] = {}
    for name, op in model["operations"].items():
        shape = model["shapes"][op["input"]["shape"]] if "input" in op else {"members": {}}
        out[name] = Operation(
            name=name, http_method=op["http"]["method"], request_uri=op["http"]["requestUri"],
            status=int(op["http"].get("responseCode", 200)), members=tuple(shape["members"]),
            required=tuple(shape.get("required", ())))
    return MappingProxyType(out)


def operation(name: str) -> Operation:
    """The operation ``name`` of the service description (KeyError when it has none)."""
    return operations()[name]


@functools.cache
def paginated() -> frozenset[str]:
    """The operations botocore can paginate (``paginators-1.json``)."""
    return frozenset(json.loads((_MODEL_DIR / "paginators-1.json").read_text())["pagination"])
