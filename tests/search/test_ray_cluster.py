"""A two-node Ray cluster on this machine: `ray start --head` plus a worker node with its own
resources; an indexing job submitted to it loses an encoder worker process mid-job (SIGKILL)
and the index is still complete and identical to the local engine's.

Both nodes run in their own process groups under a private temp dir, auth token and ports;
the fixture's finalizer kills the groups whatever happens (and .ci/run stops Ray at exit)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from core.io import read_json
from core.search.store import build_index, load_rows
from tests.helpers import IMAGE_SIZE, REPO, make_intel_subset

pytestmark = [pytest.mark.slow, pytest.mark.ray]

RAY = str(Path(sys.executable).with_name("ray"))
RESOURCE = "indexer"  # only the worker node has it, so every task and actor lands there
DELAY = 1.0  # seconds per batch on the worker node: the kill lands while batches are in flight
BATCH, CHUNK = 4, 8


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs() -> dict[int, tuple[int, int, str]]:
    """{pid: (parent pid, process group, command line)} of the live processes (Linux /proc)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if fields[0] != "Z":  # zombies are dead already
            out[int(d.name)] = (int(fields[1]), int(fields[2]), cmd)
    return out


def _tree(pgids: list[int]) -> dict[int, str]:
    """The processes of these groups and all their descendants: the raylet starts its worker
    processes in process groups of their own."""
    procs = _procs()
    found = {pid for pid, (_, g, _) in procs.items() if g in pgids}
    while True:
        more = {pid for pid, (pp, _, _) in procs.items() if pp in found} - found
        if not more:
            return {pid: procs[pid][2] for pid in found}
        found |= more


def _kill(pgids: list[int]) -> None:
    for _ in range(3):  # again, in case a process was being started while we looked
        for pid in _tree(pgids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for g in pgids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(g, signal.SIGKILL)
        time.sleep(0.2)


class Cluster:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        token = tmp / "auth_token"
        token.write_text(secrets.token_hex(32))
        # A private token (Ray's default token auth, not the user's ~/.ray one).
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.address = f"127.0.0.1:{_port()}"
        self.groups: list[int] = []

    def _start(self, args: list[str], env: dict) -> int:
        # ray start exits once its daemons run; they stay in its new process group.
        p = subprocess.Popen(
            [RAY, "start", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.groups.append(p.pid)
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out[-3000:]
        return p.pid

    def start(self) -> None:
        ports = [
            "--node-manager-port",
            "--object-manager-port",
            "--metrics-export-port",
            "--dashboard-agent-grpc-port",
            "--dashboard-agent-listen-port",
            "--runtime-env-agent-port",
        ]
        head = [
            "--head",
            "--port",
            self.address.split(":")[1],
            "--num-cpus",
            "1",
            "--temp-dir",
            str(self.tmp / "ray"),
            "--include-dashboard=false",
            "--dashboard-port",
            str(_port()),
        ]
        self._start(head + [a for p in ports for a in (p, str(_port()))], self.env)
        worker = [
            "--address",
            self.address,
            "--num-cpus",
            "2",
            "--resources",
            json.dumps({RESOURCE: 2}),
        ]
        # The batch delay is read by the encoder actors, i.e. on the worker node.
        env = {**self.env, "SCENESEEK_RAY_BATCH_DELAY": str(DELAY)}
        self.worker_group = self._start(worker + [a for p in ports for a in (p, str(_port()))], env)

    def encoder_pids(self) -> list[int]:
        """Worker processes of the worker node that run the encoder (an actor's title is
        "ray::MapWorker(...->MapBatches(_EncoderActor))")."""
        return sorted(p for p, cmd in _tree([self.worker_group]).items() if "_EncoderActor" in cmd)

    def stop(self) -> None:
        deadline = time.time() + 20
        while _tree(self.groups) and time.time() < deadline:
            _kill(self.groups)


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:  # the finalizer runs even when starting fails half-way
        c.start()
        yield c
    finally:
        c.stop()
    assert not _tree(c.groups), "Ray processes left behind"


def test_two_node_job_survives_a_killed_worker(cluster: Cluster, tmp_path: Path) -> None:
    images = make_intel_subset(tmp_path / "imgs", n_train=2, n_test=2)  # 24 real images
    index = tmp_path / "idx"
    cmd = [
        sys.executable,
        "-m",
        "core",
        "index",
        "--images",
        str(images),
        "--index",
        str(index),
        "--engine",
        "ray",
        "--address",
        cluster.address,
        "--workers",
        "1",
        "--ray-resources",
        json.dumps({RESOURCE: 1}),
        "--image-size",
        str(IMAGE_SIZE),
        "--batch-size",
        str(BATCH),
        "--chunk",
        str(CHUNK),
        "--no-mapping",
        "--json",
    ]
    job = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # Wait for the first committed chunk, then kill the encoder actor's process.
        deadline = time.time() + 300
        meta = index / "index.json"
        while job.poll() is None and time.time() < deadline:
            if meta.exists() and read_json(meta).get("rows", 0) >= CHUNK and cluster.encoder_pids():
                break
            time.sleep(0.1)
        victims = cluster.encoder_pids()
        rows_at_kill = read_json(meta)["rows"]
        assert job.poll() is None and victims, "the job ended before a worker could be killed"
        assert rows_at_kill < 24
        os.kill(victims[0], signal.SIGKILL)
        replacements: set[int] = set()
        while job.poll() is None and time.time() < deadline:
            replacements |= set(cluster.encoder_pids()) - set(victims)
            time.sleep(0.1)
        out, err = job.communicate(timeout=max(1, deadline - time.time()))
    finally:
        _kill([job.pid])
    assert job.returncode == 0, err[-3000:]
    assert replacements, "Ray did not start a new encoder actor after the kill"
    stats = json.loads(out)
    assert (stats["found"], stats["rows"], stats["skipped"]) == (24, 24, [])
    # Complete and correct: the same rows and vectors as the local engine on the same files.
    local = tmp_path / "local"
    # derive=False like the job's --no-mapping: the encoded rows alone (test_ray_engine
    # compares the derived columns of both engines)
    build_index(
        images, local, image_size=IMAGE_SIZE, workers=0, batch_size=8, device="cpu", derive=False
    )
    a, b = load_rows(local), load_rows(index)
    a = a.take(pa.compute.sort_indices(a, [("path", "ascending")]))
    b = b.take(pa.compute.sort_indices(b, [("path", "ascending")]))
    for name in ("path", "sha256", "split", "label", "top_labels", "text"):
        assert b[name].to_pylist() == a[name].to_pylist(), name
    np.testing.assert_allclose(
        np.array(b["vector"].to_pylist()), np.array(a["vector"].to_pylist()), atol=1e-5
    )
    assert read_json(index / "index.json")["rows"] == 24
