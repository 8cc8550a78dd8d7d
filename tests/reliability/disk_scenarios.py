"""Run inside ``unshare --mount`` by ``test_disks.py``: put a prepared home on a read-only bind
mount or a full tmpfs, then drive it in process, through the CLI and through a real
``lvkit serve`` with boto3. Prints one JSON object of observations (the test asserts on them).

Usage: ``python -m tests.reliability.disk_scenarios readonly|full HOME WORKDIR``
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _png() -> bytes:
    from tests.conftest import png_bytes

    return png_bytes(np.full((64, 64, 3), 30, np.uint8))


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _code(call: Any) -> str:
    try:
        call()
        return "ok"
    except Exception as exc:
        response = getattr(exc, "response", None)
        code = response["Error"]["Code"] if response else type(exc).__name__
        return f"{code}: {getattr(exc, 'message', None) or response and response['Error']['Message'] or exc}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def observe(home: Path, free: Path | None = None) -> dict[str, Any]:
    """What works on ``home``; with ``free`` (a filler file), delete it while the server runs and
    see the server take changes again without a restart."""
    import lvkit
    from tests.server.conftest import boto

    out: dict[str, Any] = {}
    body = _png()
    # in process
    lv = lvkit.client(home)
    out["writable"] = lv.service.store.writable
    out["list"] = [p["ProjectName"] for p in lv.list_projects()["Projects"]]
    out["describe"] = lv.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]["Status"]
    out["detect"] = _code(lambda: lv.detect_anomalies(ProjectName="p", ModelVersion="1", ContentType="image/png",
                                                      Body=body))
    out["create"] = _code(lambda: lv.create_project(ProjectName="new"))
    out["start"] = _code(lambda: lv.start_model(ProjectName="p", ModelVersion="2", MinInferenceUnits=1))
    out["tag"] = _code(lambda: lv.tag_resource(ResourceArn=lv.service.store.project_arn("p"),
                                               Tags=[{"Key": "k", "Value": "v"}]))
    lv.service.close()
    # the CLI: reads work, a change is one clear line, never a traceback
    cli = [str(Path(sys.executable).with_name("lvkit"))]
    listing = subprocess.run([*cli, "models", "list", "--project", "p", "--home", str(home)], capture_output=True,
                             text=True, timeout=120)
    out["cli_list"] = (listing.returncode, listing.stderr[-300:])
    start = subprocess.run([*cli, "models", "start", "--project", "p", "--version", "2", "--home", str(home)],
                           capture_output=True, text=True, timeout=120)
    out["cli_start"] = (start.returncode, start.stderr[-400:])
    # a real server
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "lvkit.server", "--home", str(home), "--port", str(port),
                               "--log-level", "warning"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        client = boto(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_projects()
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    out["server_started"] = False
                    out["server_stderr"] = server.communicate()[1][-2000:]
                    return out
                time.sleep(0.1)
        out["server_started"] = True
        out["http_describe"] = client.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]["Status"]
        out["http_detect"] = _code(lambda: client.detect_anomalies(ProjectName="p", ModelVersion="1",
                                                                   ContentType="image/png", Body=body))
        out["http_create"] = _code(lambda: client.create_project(ProjectName="new2"))
        if free is not None:
            free.unlink()
            deadline = time.monotonic() + 10
            while (answer := _code(lambda: client.create_project(ProjectName="freed"))) != "ok":
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            out["http_create_after_freeing"] = answer
    finally:
        server.kill()
        out["server_stderr"] = server.communicate(timeout=30)[1][-2000:]
    return out


def main() -> None:
    scenario, home, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    target = work / "mnt"
    target.mkdir()
    if scenario == "readonly":
        _mount("--bind", str(home), str(target))
        _mount("-o", "remount,bind,ro", str(target))
        result = {"before": observe(target)}
    else:
        _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target))
        shutil.copytree(home, target / "home")
        filler = target / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk to the last byte
            for size in (1 << 16, 4096, 512, 1):
                while True:
                    os.write(fd, b"\0" * size)
        except OSError:
            pass
        finally:
            os.close(fd)
        result = {"before": observe(target / "home", free=filler)}
        import lvkit

        lv = lvkit.client(target / "home")
        result["after_create"] = _code(lambda: lv.create_project(ProjectName="after"))
        result["after_list"] = sorted(p["ProjectName"] for p in lv.list_projects()["Projects"])
        result["after_status"] = lv.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]["Status"]
    print(json.dumps(result))
    os._exit(0)


if __name__ == "__main__":
    main()
