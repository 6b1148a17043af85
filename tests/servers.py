"""Real redis-server processes for the tests: a single node and a 3-master cluster.

Each listens on a free loopback port, in a temporary directory, and is stopped at the end.
Whether a missing binary skips or fails the tests is decided once, in conftest.py.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

REDIS_SERVER = shutil.which("redis-server")


def redis_server_binary() -> str:
    """The redis-server binary; a clear error when it is not installed."""
    if REDIS_SERVER is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return REDIS_SERVER


def free_port(*, cluster: bool = False) -> int:
    """A free loopback port; for a cluster node, one whose bus port (+10000) is free too."""
    if not cluster:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of ports for a cluster node")


def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout: float = 30,
    process: subprocess.Popen[Any] | None = None,
) -> None:
    """Return once ``condition()`` is true; raise naming ``what`` if ``timeout`` passes first,
    or ``process`` exits. (For a process to get somewhere, never for a window of the guard's.)"""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.05)


def wait_listening(port: int, process: subprocess.Popen[Any], timeout: float = 60) -> None:
    """Return once something listens on 127.0.0.1:``port``; raise if ``process`` dies first
    or ``timeout`` passes."""

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(listening, f"a listener on port {port}", timeout, process)


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Ask ``process`` to stop, and kill it if it has not within ten seconds."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """One redis-server on 127.0.0.1:port, with no persistence."""

    def __init__(self, workdir: Path, port: int | None = None, *extra: str) -> None:
        self.binary = redis_server_binary()
        self.port = port or free_port(cluster="--cluster-enabled" in extra)
        self.workdir = workdir / str(self.port)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        args += ["--dir", str(self.workdir), *self.extra]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        with redis.Redis(port=self.port) as client:

            def answers() -> bool:
                try:
                    return bool(client.ping())
                except redis.ConnectionError:
                    return False

            wait_until(answers, f"redis-server on port {self.port}", 10, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


def start_sentinel(workdir: Path, master_port: int, *settings: str) -> tuple[int, subprocess.Popen[bytes]]:
    """A Sentinel on a free loopback port, watching service "guarded" at ``master_port`` with a
    quorum of 1; ``settings`` are further lines of its config. Returns its port and process
    once it listens."""
    port = free_port()
    conf = workdir / f"sentinel-{port}.conf"  # a Sentinel rewrites its config: its own file
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {workdir}",
        f"sentinel monitor guarded 127.0.0.1 {master_port} 1",
    ]
    conf.write_text("\n".join([*lines, *settings]) + "\n")
    process = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    wait_listening(port, process)
    return port, process


class RedisCluster:
    """Three masters on free ports, joined with redis-cli --cluster create; with ``replicas``,
    one replica each and a short node timeout, so that a killed master fails over in seconds."""

    def __init__(self, workdir: Path, *, replicas: bool = False) -> None:
        extra = ("--cluster-enabled", "yes", "--cluster-node-timeout", "1000" if replicas else "15000")
        self.replicas = replicas
        self.nodes = [RedisServer(workdir, None, *extra) for _ in range(6 if replicas else 3)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is needed to form the test cluster")
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(int(self.replicas)),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        clients = [redis.Redis(port=n.port) for n in self.nodes]

        def formed() -> bool:
            infos = [c.cluster("info") for c in clients]
            return all(
                i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == len(clients) for i in infos
            )

        wait_until(formed, "the test cluster")
        return self

    def master_of(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now."""
        slot = redis.Redis(port=self.nodes[0].port).cluster("keyslot", key)
        for node in self.nodes:
            if node.process is None:
                continue
            for start, end, master, *_ in redis.Redis(port=node.port).execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == master[1])
        raise RuntimeError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def top_level_commands(port: int, work: Callable[[], Any]) -> list[str]:
    """The commands clients sent while ``work()`` ran, as MONITOR saw them (not the
    ones scripts ran inside Redis)."""
    seen: list[str] = []
    client = redis.Redis(port=port)
    with client.monitor() as monitor:
        ready = threading.Event()

        def read() -> None:
            ready.set()
            for command in monitor.listen():
                if command["command"] == "ECHO end-of-test":
                    return
                if command["client_type"] != "lua":
                    seen.append(command["command"].split()[0])

        reader = threading.Thread(target=read)
        reader.start()
        ready.wait()
        redis.Redis(port=port).echo("start")
        work()
        redis.Redis(port=port).echo("end-of-test")
        reader.join(timeout=30)
    handshake = {"ECHO", "HELLO", "CLIENT", "AUTH", "SELECT"}  # connection set-up, ours and theirs
    return [c for c in seen if c not in handshake]


NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def start_nginx(workdir: Path, port: int, upstream: str, *directives: str) -> subprocess.Popen[bytes]:
    """nginx on 127.0.0.1:``port`` proxying to ``upstream`` (``127.0.0.1:8000`` or
    ``unix:/path.sock:``) as a stock config does: it appends the peer to X-Forwarded-For and
    passes every other header (a client's own ``Forwarded`` too) through untouched."""
    if NGINX is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
    root = workdir / f"nginx-{port}"
    root.mkdir(parents=True, exist_ok=True)
    temps = " ".join(
        f"{kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(
        f"""{user} worker_processes 1; daemon off; pid {root / "nginx.pid"}; error_log {root / "error.log"};
events {{ worker_connections 1024; }}
http {{
    access_log off; {temps}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            {" ".join(directives)}
        }}
    }}
}}
"""
    )
    process = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(root)], stderr=subprocess.DEVNULL)
    wait_listening(port, process)
    return process
