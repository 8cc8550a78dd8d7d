"""Soak test: mixed traffic and injected faults against a real ``lvkit serve`` subprocess.

For ``--minutes`` (default 2; ``--seconds`` for short runs) concurrent clients (threads, each
its own boto3 client) send DetectAnomalies, StartModel/StopModel with ClientTokens (fresh and
replayed), CreateProject/DeleteProject, TagResource/UntagResource/ListTagsForResource,
Describe/List calls, and bad input (mutated bodies, bad names, over raw ``http.client``) to
an ``lvkit serve`` over a fresh home holding fake model versions. Meanwhile faults are injected:
the server is killed with SIGKILL at random moments and restarted on the same home and port,
uploads are trickled slowly or stalled, and clients disconnect mid-request.

Printed: requests sent, answers by HTTP status and by error code, p50/p99 latency per
operation, the peak RSS of each server process, restarts, and at the end the resources left
stuck (a model still STARTING_HOSTING/STOPPING_HOSTING/TRAINING 30 s after the last restart)
or lost (a project whose CreateProject answered 200, never deleted, but missing), plus
acknowledged deletes that came back, idempotency replays that answered differently and wrong
DetectAnomalies verdicts.

Exit status 1 when any answer is a 5xx (no 5xx is injected: a killed server answers nothing),
a client lost its connection outside an injected outage, or anything is stuck, lost, came
back, replayed differently or was misjudged; 0 otherwise.

Usage::

    python benchmarks/soak.py --seconds 60
    python benchmarks/soak.py --minutes 10 --clients 8 --kill-every 20
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import lvkit
from lvkit.backends.fake import FakeBackend

REGION, ACCOUNT = "us-east-1", "123456789012"
TRANSIENT = ("STARTING_HOSTING", "STOPPING_HOSTING", "TRAINING")
STATIC, LIFECYCLE, VERSIONS = "soak-static", "soak", ("1", "2", "3")


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def bright() -> np.ndarray:
    rgb = np.full((64, 64, 3), 30, np.uint8)
    rgb[:, :40] = 250
    return rgb


DARK, BRIGHT = png(np.full((64, 64, 3), 30, np.uint8)), png(bright())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss(pid: int) -> int:
    """The peak resident set of ``pid`` in bytes (VmHWM; psutil's current RSS where /proc is missing)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:
        return 0


class Server:
    """``lvkit serve`` as a subprocess on a fixed port; kill -9 and restart on the same home."""

    def __init__(self, home: Path, port: int, logfile: Path) -> None:
        self.home, self.port, self.logfile = home, port, logfile
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.peaks: list[int] = []  # peak RSS of each process so far
        self.restarts = 0
        self.outages: list[tuple[float, float]] = []  # (killed, answering again), monotonic
        self.last_start = 0.0
        self.down_since: float | None = None  # killed and not answering yet
        self.lock = threading.Lock()

    def start(self) -> None:
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lvkit.server", "--home", str(self.home), "--port", str(self.port),
                 "--log-level", "warning", "--idle-timeout", "2", "--max-queue", "32"],
                stdout=out, stderr=subprocess.STDOUT)
        self.peaks.append(0)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"lvkit serve did not start; see {self.logfile}") from None
                time.sleep(0.02)
        self.last_start = time.monotonic()

    def sample(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.peaks[-1] = max(self.peaks[-1], peak_rss(self.proc.pid))

    def kill_and_restart(self, rng: random.Random) -> None:
        with self.lock:
            assert self.proc is not None
            self.sample()
            killed = self.down_since = time.monotonic()
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            time.sleep(rng.uniform(0, 1.0))
            self.start()
            self.restarts += 1
            self.outages.append((killed, time.monotonic()))
            self.down_since = None

    def in_outage(self, start: float, end: float, grace: float = 0.5) -> bool:
        """Whether [start, end] overlaps an outage (kill to answering again, plus ``grace``), or one now."""
        down = self.down_since
        return (down is not None and end >= down) or any(start <= b + grace and end >= a for a, b in self.outages)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sample()
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Stats:
    """Outcomes and latencies per operation, shared by all threads."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.sent = 0
        self.failures: dict[str, list[str]] = defaultdict(list)
        self.injected: Counter[str] = Counter()

    def fail(self, kind: str, detail: str) -> None:
        with self.lock:
            self.failures[kind].append(detail)

    def answered(self, op: str, seconds: float, status: int, code: str | None, detail: str = "") -> None:
        with self.lock:
            self.sent += 1
            self.latency[op].append(seconds)
            self.status[str(status)] += 1
            if code:
                self.codes[code] += 1
        if status >= 500:
            self.fail("5xx answers", f"{op} -> {status} {code}: {detail}"[:300])

    def no_answer(self, op: str, start: float, exc: BaseException) -> None:
        with self.lock:
            self.sent += 1
        if self.server.in_outage(start, time.monotonic()):
            with self.lock:
                self.injected[f"no answer during a kill -9 outage ({type(exc).__name__})"] += 1
        else:
            now = time.monotonic()
            since = f"{now - self.server.last_start:.1f} s after the last (re)start"
            self.fail("connection errors outside outages",
                      f"{op} ({now - start:.2f} s, {since}): {type(exc).__name__}: {exc}"[:300])


def boto(url: str) -> Any:
    """A boto3 client for the server: dummy credentials, no retries (every answer shows as it is)."""
    from botocore.config import Config

    return lvkit.boto3_client(url, region_name=REGION, aws_access_key_id="AKIDSOAK", aws_secret_access_key="soak",
                              config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=60,
                                            max_pool_connections=2))


class Client(threading.Thread):
    """One client: a boto3 client and a loop of weighted operations until ``stop``."""

    OPS = [("detect", 40), ("lifecycle", 12), ("describe", 8), ("project", 10), ("list", 5), ("tags", 10),
           ("bad", 15)]

    def __init__(self, k: int, url: str, stats: Stats, stop: threading.Event, seed: int, shared: dict[str, Any]):
        super().__init__(name=f"soak-client-{k}", daemon=True)
        self.k, self.url, self.stats, self.stop, self.shared = k, url, stats, stop, shared
        self.rng = random.Random(seed * 1000 + k)
        self.lv = boto(url)
        self.n = 0
        self.tokens: dict[tuple[str, str], tuple[str, str]] = {}  # (op, version) -> (token, first Status)
        self.projects: dict[str, tuple[str, str]] = {}  # live projects this client created: name -> (token, arn)
        self.unsure: list[tuple[str, str]] = []  # CreateProject calls a kill left unanswered: (name, token)
        self.last_status: str | None = None  # "status code" of the last error answer, None after no answer

    def call(self, op: str, fn: Any, **kwargs: Any) -> dict[str, Any] | None:
        """One boto3 call, recorded; the response, or None (an error answer or no answer)."""
        from botocore.exceptions import ClientError

        start = time.monotonic()
        try:
            out = fn(**kwargs)
        except ClientError as exc:
            meta, code = exc.response.get("ResponseMetadata", {}), exc.response.get("Error", {}).get("Code")
            self.last_status = f"{meta.get('HTTPStatusCode', 0)} {code}"
            self.stats.answered(op, time.monotonic() - start, meta.get("HTTPStatusCode", 0), code, str(exc))
            return None
        except Exception as exc:  # connection refused/reset, timeouts
            self.last_status = None
            self.stats.no_answer(op, start, exc)
            time.sleep(0.05)
            return None
        self.stats.answered(op, time.monotonic() - start, out["ResponseMetadata"]["HTTPStatusCode"], None)
        return out

    def run(self) -> None:
        names, weights = [o for o, _ in self.OPS], [w for _, w in self.OPS]
        while not self.stop.is_set():
            getattr(self, "op_" + self.rng.choices(names, weights)[0])()

    def op_detect(self) -> None:
        anomalous = self.rng.random() < 0.5
        project, version = (STATIC, "1") if self.rng.random() < 0.8 else (LIFECYCLE, self.rng.choice(VERSIONS))
        out = self.call("DetectAnomalies", self.lv.detect_anomalies, ProjectName=project, ModelVersion=version,
                        ContentType="image/png", Body=BRIGHT if anomalous else DARK)
        if out is not None and out["DetectAnomalyResult"]["IsAnomalous"] is not anomalous:
            self.stats.fail("wrong DetectAnomalies verdicts", f"{project}/{version}: {out['DetectAnomalyResult']}")

    def op_lifecycle(self) -> None:
        version = self.rng.choice(VERSIONS)
        op = self.rng.choice(["StartModel", "StopModel"])
        replay = self.tokens.get((op, version)) if self.rng.random() < 0.3 else None
        token = replay[0] if replay else str(uuid.uuid4())
        kwargs: dict[str, Any] = {"ProjectName": LIFECYCLE, "ModelVersion": version, "ClientToken": token}
        if op == "StartModel":
            kwargs["MinInferenceUnits"] = 1
        out = self.call(op, self.lv.start_model if op == "StartModel" else self.lv.stop_model, **kwargs)
        if out is None:
            return
        if replay is not None and out["Status"] != replay[1]:
            self.stats.fail("idempotency replays answered differently",
                            f"{op} {LIFECYCLE}/{version} token {token}: first {replay[1]}, replay {out['Status']}")
        self.tokens[(op, version)] = (token, out["Status"])

    def op_describe(self) -> None:
        self.call("DescribeModel", self.lv.describe_model, ProjectName=LIFECYCLE,
                  ModelVersion=self.rng.choice(VERSIONS))

    def op_project(self) -> None:
        acked, gone, unsure = self.shared["created"], self.shared["deleted"], self.shared["unsure"]
        r = self.rng.random()
        if self.unsure and self.stats.server.down_since is None:
            # a CreateProject the kill left unanswered: the same token again must answer 200 (made then or now)
            name, token = self.unsure.pop()
            out = self.call("CreateProject (replay after a kill)", self.lv.create_project, ProjectName=name,
                            ClientToken=token)
            if out is not None:
                unsure.discard(name)
                self.projects[name] = (token, out["ProjectMetadata"]["ProjectArn"])
                acked[name] = out["ProjectMetadata"]["ProjectArn"]
            elif self.last_status is not None:
                unsure.discard(name)
                self.stats.fail("idempotency replays answered differently",
                                f"CreateProject {name} replayed after a kill: {self.last_status}")
            else:
                self.unsure.append((name, token))
        elif r < 0.5 or not self.projects:
            self.n += 1
            name, token = f"soak-c{self.k}-{self.n}", str(uuid.uuid4())
            start = time.monotonic()
            out = self.call("CreateProject", self.lv.create_project, ProjectName=name, ClientToken=token)
            if out is not None:
                arn = out["ProjectMetadata"]["ProjectArn"]
                self.projects[name] = (token, arn)
                acked[name] = arn
            elif self.last_status is None and self.stats.server.in_outage(start, time.monotonic()):
                unsure.add(name)  # may or may not exist: replayed later, left out of the checks until then
                self.unsure.append((name, token))
        elif r < 0.65:  # replay a CreateProject: same token, same request => the same answer
            name = self.rng.choice(sorted(self.projects))
            token, arn = self.projects[name]
            out = self.call("CreateProject", self.lv.create_project, ProjectName=name, ClientToken=token)
            if out is not None and out["ProjectMetadata"]["ProjectArn"] != arn:
                self.stats.fail("idempotency replays answered differently", f"CreateProject {name}: {out}")
        else:
            name = self.rng.choice(sorted(self.projects))
            start = time.monotonic()
            out = self.call("DeleteProject", self.lv.delete_project, ProjectName=name)
            if out is not None:
                del self.projects[name]
                gone.add(name)
            elif self.last_status is None and self.stats.server.in_outage(start, time.monotonic()):
                del self.projects[name]
                unsure.add(name)  # deleted or not: left out of the checks

    def op_list(self) -> None:
        if self.rng.random() < 0.5:
            self.call("ListProjects", self.lv.list_projects, MaxResults=self.rng.randint(1, 100))
        else:
            self.call("ListModels", self.lv.list_models, ProjectName=LIFECYCLE)

    def op_tags(self) -> None:
        arn = f"arn:aws:lookoutvision:{REGION}:{ACCOUNT}:project/{LIFECYCLE}"
        r = self.rng.random()
        if r < 0.4:
            self.call("TagResource", self.lv.tag_resource, ResourceArn=arn,
                      Tags=[{"Key": f"c{self.k}-{self.rng.randrange(20)}", "Value": str(self.n)}])
        elif r < 0.7:
            self.call("UntagResource", self.lv.untag_resource, ResourceArn=arn,
                      TagKeys=[f"c{self.k}-{self.rng.randrange(20)}"])
        else:
            self.call("ListTagsForResource", self.lv.list_tags_for_resource, ResourceArn=arn)

    def op_bad(self) -> None:
        method, path, headers, body = bad_request(self.rng)
        start = time.monotonic()
        host, port = "127.0.0.1", int(self.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
        except Exception as exc:
            self.stats.no_answer("bad input", start, exc)
            time.sleep(0.05)
            return
        finally:
            conn.close()
        code = r.getheader("x-amzn-ErrorType")
        self.stats.answered("bad input", time.monotonic() - start, r.status, code,
                            f"{method} {path[:120]} {body[:80]!r} -> {data[:150]!r}")
        if r.status >= 400 and not code:
            self.stats.fail("error answers without x-amzn-ErrorType", f"{method} {path[:120]} -> {r.status}")


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = rng.randrange(4)
    if op == 0:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= rng.randint(1, 255)
    elif op == 1:
        del b[rng.randrange(len(b)):]
    elif op == 2:
        i = rng.randrange(len(b))
        b[i:i] = rng.randbytes(rng.randint(1, 64))
    else:
        b = b[:8] + b[8:40][::-1] + b[40:]
    return bytes(b)


def bad_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    """A request the server must refuse (or answer) without a 5xx: mutated bodies and bad names."""
    p, model = "/2020-11-20/projects", f"arn:aws:lookoutvision:{REGION}:{ACCOUNT}:model/{LIFECYCLE}/"
    bad_versions = ["%C2%B2", "%D9%A1", "1" * 25, "..", "%2F", "0", "latest%00", "%ED%A0%80", "a" * 300]
    bad_names = ["a" * 300, "-x", "%00", "%C3%BC", "..", "%2e%2e", "x%0Ay"]
    kind = rng.randrange(8)
    if kind == 0:
        ctype = rng.choice(["image/png", "image/jpeg", "image/gif", "", "image/png; x=1"])
        return "POST", f"{p}/{STATIC}/models/1/detect", {"Content-Type": ctype}, mutate(rng, DARK)
    if kind == 1:
        return "GET", f"{p}/{LIFECYCLE}/models/{rng.choice(bad_versions)}", {}, b""
    if kind == 2:
        return "GET", f"{p}/{rng.choice(bad_names)}", {}, b""
    if kind == 3:
        return "POST", f"{p}/{LIFECYCLE}/models/1/start", {"Content-Type": "application/json"}, rng.choice([
            b"[" * 5000, b'{"MinInferenceUnits": 9223372036854775808}', b'{"MinInferenceUnits": "1"}',
            b'{"MinInferenceUnits": 1e18}', b"\xff\xfe{", b"{", b'{"MinInferenceUnits": 0}'])
    if kind == 4:
        return "POST", p, {"Content-Type": "application/json"}, rng.choice([
            b'{"ProjectName": "' + b"a" * 300 + b'"}', b'{"ProjectName": 1}', b'{"ProjectName": "\xff"}',
            b'{"ProjectName": ' + b"[" * 3000 + b"}", b'{"ProjectName": "x\\ud800"}'])
    if kind == 5:
        arn = model + rng.choice(bad_versions)
        return "POST", "/2020-11-20/tags/" + arn, {"Content-Type": "application/json"}, rng.choice([
            b'{"Tags": [{"Key": "a", "Value": "b"}]}', b'{"Tags": [{"Key": {"a": 1}, "Value": "v"}]}'])
    if kind == 6:
        project_arn = f"arn:aws:lookoutvision:{REGION}:{ACCOUNT}:project/{LIFECYCLE}"
        return "POST", "/2020-11-20/tags/" + project_arn, {"Content-Type": "application/json"}, rng.choice([
            '{"Tags": [{"Key": "a\\nb", "Value": "\\u2028"}]}'.encode(), b'{"Tags": [{"Key": "aws:x", "Value": ""}]}',
            b'{"Tags": [{"Key": "\t", "Value": "\\u0000"}]}', b'{"Tags": "x"}'])
    query = rng.choice(["maxResults=%C2%B2", "maxResults=0", "maxResults=" + "9" * 40, "nextToken=%FF%FE",
                        "nextToken=" + "A" * 3000, "maxResults=1&nextToken=bHZraXQ6LTE%3D"])
    return "GET", f"{p}?{query}", {}, b""


class Chaos(threading.Thread):
    """Injected faults: kill -9 and restart, slow and stalled uploads, disconnects mid-request."""

    def __init__(self, server: Server, stats: Stats, stop: threading.Event, seed: int, kill_every: float,
                 kills_until: float) -> None:
        super().__init__(name="soak-chaos", daemon=True)
        self.server, self.stats, self.stop, self.kill_every = server, stats, stop, kill_every
        self.kills_until = kills_until
        self.rng = random.Random(seed + 7)
        self.faults: Counter[str] = Counter()
        self.pending: list[threading.Thread] = []

    def run(self) -> None:
        next_kill = time.monotonic() + self.rng.expovariate(1 / self.kill_every)
        while not self.stop.wait(self.rng.uniform(0.2, 1.0)):
            self.server.sample()
            if time.monotonic() >= next_kill and time.monotonic() < self.kills_until:
                self.server.kill_and_restart(self.rng)
                self.faults["kill -9 and restart"] += 1
                log(f"killed the server (-9) and restarted it ({self.server.restarts} restarts)")
                next_kill = time.monotonic() + self.rng.expovariate(1 / self.kill_every)
                continue
            self.pending = [t for t in self.pending if t.is_alive()]
            if len(self.pending) < 4:
                kind = self.rng.choice(["slow upload", "stalled upload", "disconnect mid-body",
                                        "disconnect before the answer"])
                t = threading.Thread(target=self.fault, args=(kind, self.rng.random()), daemon=True)
                t.start()
                self.pending.append(t)
                self.faults[kind] += 1
        for t in self.pending:
            t.join(30)

    def fault(self, kind: str, u: float) -> None:
        path = f"/2020-11-20/projects/{STATIC}/models/1/detect"
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(DARK)}\r\n\r\n").encode()
        start = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=60) as sock:
                sock.sendall(head)
                if kind == "slow upload":  # the whole body, in small pieces over 2-5 s: must be answered
                    pieces = [DARK[i:i + 64] for i in range(0, len(DARK), 64)]
                    for piece in pieces:
                        time.sleep((2 + 3 * u) / len(pieces))
                        sock.sendall(piece)
                    answer = sock.recv(65536)
                    if not answer.startswith(b"HTTP/1.1 "):
                        self.stats.no_answer("fault: slow upload", start, ConnectionError(f"answered {answer[:80]!r}"))
                        return
                    status = int(answer.split(b" ", 2)[1])
                    self.stats.answered("fault: slow upload", time.monotonic() - start, status, None,
                                        repr(answer[:200]))
                    if status != 200 and not self.server.in_outage(start, time.monotonic()):
                        self.stats.fail("slow uploads not answered 200", repr(answer[:200]))
                elif kind == "stalled upload":  # half the body, then silence for 3-8 s, then hang up
                    sock.sendall(DARK[:len(DARK) // 2])
                    time.sleep(3 + 5 * u)
                elif kind == "disconnect mid-body":
                    sock.sendall(DARK[:int(len(DARK) * u)])
                else:
                    sock.sendall(DARK)
        except OSError:
            pass  # the server was killed meanwhile: nothing to judge


def settle(lv: Any, server: Server, stuck_after: float) -> dict[str, str]:
    """Poll model statuses until none is transient or ``stuck_after`` s have passed since the last restart."""
    while True:
        statuses = {}
        for project in (STATIC, LIFECYCLE):
            for m in lv.list_models(ProjectName=project)["Models"]:
                statuses[f"{project}/{m['ModelVersion']}"] = m["Status"]
        transient = {k: v for k, v in statuses.items() if v in TRANSIENT}
        if not transient or time.monotonic() - server.last_start > stuck_after:
            return transient
        time.sleep(0.5)


def all_projects(lv: Any) -> set[str]:
    names, kwargs = set(), {"MaxResults": 100}
    while True:
        page = lv.list_projects(**kwargs)
        names |= {p["ProjectName"] for p in page["Projects"]}
        if not page.get("NextToken"):
            return names
        kwargs["NextToken"] = page["NextToken"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=None, help="overrides --minutes")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--kill-every", type=float, default=None, help="mean seconds between kill -9 (default: a quarter "
                    "of the run, at most 60)")
    ap.add_argument("--stuck-after", type=float, default=30.0, help="seconds after the last restart a transient "
                    "status counts as stuck")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--home", default=None, help="default: a fresh temporary folder, removed afterwards")
    args = ap.parse_args(argv)
    duration = args.seconds if args.seconds is not None else 60 * args.minutes
    kill_every = args.kill_every or min(60.0, duration / 4)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LOOKOUTVISION", "LVKIT_ACCESS_KEYS"):
        os.environ.pop(name, None)
    os.environ.update(AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION=REGION, LVKIT_ACCOUNT_ID=ACCOUNT,
                      AWS_REGION=REGION)

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="lvkit-soak-"))
    log(f"stage 1/5: setup: home {home}, projects {STATIC} (1 version) and {LIFECYCLE} ({len(VERSIONS)} versions), "
        "fake segmentation models 64x64")
    store = lvkit.Store(home, region=REGION, account=ACCOUNT)
    for project, n in ((STATIC, 1), (LIFECYCLE, len(VERSIONS))):
        store.create_project(project)
        for _ in range(n):
            store.add_model(project, backend="fake",
                            build=lambda d: FakeBackend.save(d, image_size=(64, 64), segmentation=True))
    store.close()

    server = Server(home, free_port(), home / "server.log")
    server.start()
    stats = Stats(server)
    admin = boto(server.url)
    admin.start_model(ProjectName=STATIC, ModelVersion="1", MinInferenceUnits=1)
    while admin.describe_model(ProjectName=STATIC, ModelVersion="1")["ModelDescription"]["Status"] != "HOSTED":
        time.sleep(0.05)
    log(f"stage 2/5: server pid {server.proc.pid if server.proc else '?'} on {server.url}; {STATIC}/1 HOSTED")

    stop = threading.Event()
    shared: dict[str, Any] = {"created": {}, "deleted": set(), "unsure": set()}
    clients = [Client(k, server.url, stats, stop, args.seed, shared) for k in range(args.clients)]
    begin = time.monotonic()
    chaos = Chaos(server, stats, stop, args.seed, kill_every, kills_until=begin + duration - 5)
    log(f"stage 3/5: traffic for {duration:.0f} s: {args.clients} boto3 clients; faults: kill -9 every "
        f"~{kill_every:.0f} s, "
        "slow and stalled uploads, disconnects mid-request")
    for c in clients:
        c.start()
    chaos.start()
    while time.monotonic() - begin < duration:
        time.sleep(min(10.0, max(0.1, duration - (time.monotonic() - begin))))
        with stats.lock:
            fails = sum(map(len, stats.failures.values()))
            log(f"  t={time.monotonic() - begin:4.0f} s: {stats.sent} requests, {server.restarts} restarts, "
                f"{fails} failures so far")
    stop.set()
    for c in clients:
        c.join(90)
    chaos.join(90)

    log(f"stage 4/5: settle: waiting for transient statuses (stuck once {args.stuck_after:.0f} s past the last "
        "restart)")
    stuck = settle(admin, server, args.stuck_after)
    log("stage 5/5: check: every acknowledged project present, every acknowledged delete gone; then stop")
    present = all_projects(admin)
    created, deleted, unsure = shared["created"], shared["deleted"], shared["unsure"]
    lost = sorted(set(created) - deleted - unsure - present)
    back = sorted((deleted - unsure) & present)
    server.stop()
    tracebacks = server.logfile.read_text(errors="replace").count("Traceback")
    for name in lost:
        stats.fail("lost projects (CreateProject 200, never deleted, missing)", name)
    for name in back:
        stats.fail("deleted projects back (DeleteProject 200, present)", name)
    for key, status in stuck.items():
        since = time.monotonic() - server.last_start
        stats.fail("stuck models", f"{key} {status} {since:.0f} s after the last restart")

    print()
    print(f"== lvkit soak: {duration:.0f} s, {args.clients} clients, seed {args.seed} ==")
    print(f"requests sent: {stats.sent}")
    print("answers by HTTP status: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.status.items())))
    print("answers by error code: " + (", ".join(f"{k}: {v}" for k, v in stats.codes.most_common()) or "none"))
    print("injected faults: " + ", ".join(f"{k}: {v}" for k, v in sorted(chaos.faults.items())))
    print("requests without an answer, injected: "
          + (", ".join(f"{k}: {v}" for k, v in sorted(stats.injected.items())) or "none"))
    print(f"{'operation':<36}{'answers':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for op, values in sorted(stats.latency.items()):
        print(f"{op:<36}{len(values):>8}{1000 * percentile(values, 50):>10.1f}{1000 * percentile(values, 99):>10.1f}"
              f"{1000 * max(values):>10.1f}")
    peaks = [p / 2**20 for p in server.peaks if p]
    print(f"server: {server.restarts} restarts (kill -9); peak RSS per process (MiB): "
          + ", ".join(f"{p:.0f}" for p in peaks) + f"; max {max(peaks, default=0):.0f} MiB")
    print(f"server log: {tracebacks} tracebacks ({server.logfile})")
    print(f"projects: {len(created)} created (200), {len(deleted)} deleted (200), {len(unsure)} unsure "
          f"(no answer during an outage, not replayed since), {len(present)} present at the end")
    print(f"stuck models: {len(stuck)}; lost projects: {len(lost)}; deleted projects back: {len(back)}")
    failed = {k: v for k, v in stats.failures.items() if v}
    for kind, details in sorted(failed.items()):
        print(f"FAIL {len(details)} x {kind}")
        classes: dict[str, list[str]] = defaultdict(list)
        for detail in details:  # 5xx by operation and exception ("TagResource failed: TypeError")
            m = re.search(r"(\w+ failed: \w+)", detail)
            classes[m[1] if m else ""].append(detail)
        for name, members in sorted(classes.items(), key=lambda kv: -len(kv[1])):
            if name:
                print(f"  {len(members)} x {name}")
            for detail in members[:2 if name else 5]:
                print(f"    {detail}")
    print("FAILED" if failed else "PASSED")
    if not args.home and not failed:
        shutil.rmtree(home, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
