"""``lvkit serve`` prints the line a boto3 program needs; pasted into a clean shell, it works."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[2]


def test_the_printed_export_line_is_enough_for_boto3(demo_home, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("lvkit")), "serve", "--home", str(demo_home),
                               "--port", str(port), "--log-level", "warning"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        line = ""
        while "export" not in line:
            line = server.stderr.readline()
            assert line, "lvkit serve printed no export line"
        export = line.split("for boto3:", 1)[1].strip()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no credentials at all
        clean["PATH"] = f"{Path(sys.executable).parent}:{clean.get('PATH', '')}"
        program = ("import boto3, time\n"
                   "lv = boto3.client('lookoutvision')\n"
                   "for _ in range(100):\n"
                   "    try:\n"
                   "        print(lv.list_projects()['Projects'][0]['ProjectName']); break\n"
                   "    except Exception as exc:\n"
                   "        err = exc; time.sleep(0.1)\n"
                   "else:\n"
                   "    raise err\n")
        done = subprocess.run(["bash", "-c", f"{export} && {sys.executable} -c \"$PROGRAM\""], env={
            **clean, "PROGRAM": program, "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"},
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "demo"
    finally:
        server.kill()
        server.communicate(timeout=30)
