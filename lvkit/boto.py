"""boto3 ``lookoutvision`` clients for today's boto3, which no longer ships the service model.

botocore 1.40.61 dropped the Lookout for Vision model. lvkit ships its own botocore service
description (``lvkit/data/lookoutvision/2020-11-20/service-2.json`` and ``paginators-1.json``),
written from lvkit's contract for the operations ``lvkit serve`` answers, and adds it to
botocore's data path (a loader search path, the mechanism behind ``AWS_DATA_PATH``). Where
botocore still has its own model (<= 1.40.60), lvkit's takes precedence once registered.

Three ways in:

* ``lvkit.boto3_client(endpoint_url=...)``: a ready client;
* ``lvkit.register_boto3()`` once, then ``boto3.client("lookoutvision", endpoint_url=...)``
  anywhere in the program;
* for an unchanged program, the environment:
  ``export AWS_DATA_PATH="$(lvkit aws-data-path)" AWS_ENDPOINT_URL_LOOKOUTVISION=http://127.0.0.1:8080``.

boto3 is imported inside the functions, not with ``lvkit``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvkit.server_defaults import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    import boto3
    import botocore.session

__all__ = ["DATA_PATH", "boto3_client", "register_boto3"]

#: the folder to add to botocore's data path
DATA_PATH = str(Path(__file__).resolve().parent / "data")

#: where ``boto3_client`` points when neither ``endpoint_url`` nor the environment says
DEFAULT_ENDPOINT = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"


def _add_to_loader(session: botocore.session.Session) -> None:
    loader = session.get_component("data_loader")
    if DATA_PATH not in loader.search_paths:
        loader.search_paths.insert(0, DATA_PATH)


def register_boto3(session: boto3.Session | botocore.session.Session | None = None) -> None:
    """Make ``boto3.client("lookoutvision")`` use lvkit's service description.

    With no ``session``: adds lvkit's data folder to ``$AWS_DATA_PATH`` (sessions created
    later) and to boto3's default session (created if needed). With a ``session``: to that
    session only.

    Examples
    --------
    >>> import boto3, lvkit
    >>> session = boto3.Session(region_name="us-east-1", aws_access_key_id="AKID", aws_secret_access_key="s")
    >>> lvkit.register_boto3(session)
    >>> session.client("lookoutvision", endpoint_url="http://127.0.0.1:8080").can_paginate("list_models")
    True
    """
    import boto3

    if session is None:
        paths = [p for p in os.environ.get("AWS_DATA_PATH", "").split(os.pathsep) if p]
        if DATA_PATH not in paths:
            os.environ["AWS_DATA_PATH"] = os.pathsep.join([DATA_PATH, *paths])
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        session = boto3.DEFAULT_SESSION
    core = getattr(session, "_session", session)  # a boto3.Session wraps a botocore one
    _add_to_loader(core)  # either kind of session ends as botocore's


def boto3_client(endpoint_url: str | None = None, *, region_name: str | None = None, **kwargs: Any) -> Any:
    """A boto3 ``lookoutvision`` client for an lvkit server, on today's boto3.

    Parameters
    ----------
    endpoint_url : str, optional
        The server; default ``$AWS_ENDPOINT_URL_LOOKOUTVISION``, ``$AWS_ENDPOINT_URL`` or
        ``http://127.0.0.1:8080``.
    region_name : str, optional
        Default: the session's region, else ``us-east-1``.
    **kwargs
        Passed to ``boto3.Session.client`` (``aws_access_key_id``, ``config``, ...).

    Returns
    -------
    botocore.client.LookoutVision

    Notes
    -----
    Credentials come from the arguments, the environment or the shared files, never from the
    instance metadata or container endpoints. When there are none the client sends unsigned
    requests, which an lvkit server without credentials accepts.

    Examples
    --------
    >>> lv = boto3_client("http://127.0.0.1:8080", aws_access_key_id="AKID", aws_secret_access_key="s")
    >>> lv.meta.service_model.service_id, lv.meta.endpoint_url
    ('LookoutVision', 'http://127.0.0.1:8080')
    """
    import boto3
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.credentials import create_credential_resolver

    core = botocore.session.get_session()
    _add_to_loader(core)
    resolver = create_credential_resolver(core)
    for name in ("container-role", "iam-role"):  # no metadata endpoints for a local server
        resolver.remove(name)
    core.register_component("credential_provider", resolver)
    session = boto3.Session(botocore_session=core)
    endpoint_url = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_LOOKOUTVISION")
                    or os.environ.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT)
    region_name = region_name or session.region_name or "us-east-1"
    if "aws_access_key_id" not in kwargs and session.get_credentials() is None:
        unsigned = Config(signature_version=UNSIGNED)
        kwargs["config"] = kwargs["config"].merge(unsigned) if kwargs.get("config") else unsigned
    return session.client("lookoutvision", endpoint_url=endpoint_url, region_name=region_name, **kwargs)
