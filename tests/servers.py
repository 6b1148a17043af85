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


def _below_client_ports() -> range:
    """Ports the kernel never hands to an outgoing connection (those below its ephemeral range):
    one found free there stays free until a server takes it, whatever else the machine runs."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, low) if low - 10000 >= 12000 else range(20000, 55000)


def free_port(*, cluster: bool = False) -> int:
    """A free loopback port, picked at random among the ports no client connection takes; for
    a cluster node, one whose bus port (+10000) is free too. Two suites running at once may
    still pick the same one: ``RedisServer.start`` then tries another."""
    ports = _below_client_ports()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(ports.start, ports.stop - (10000 if cluster else 0))
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                if cluster:
                    b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free loopback port (or pair of ports, for a cluster node)")


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
        self.cluster = "--cluster-enabled" in extra
        self.port = port or free_port(cluster=self.cluster)
        self.chosen = port is None  # a port of our choosing may be changed if taken meanwhile
        self.root = workdir
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def workdir(self) -> Path:
        return self.root / str(self.port)

    def start(self) -> RedisServer:
        """Start it and return once it answers; on a port another process took since it was
        found free (a second suite running beside this one), once more on another port, unless
        the port was given or this is a restart."""
        for attempt in range(3):
            try:
                return self._start()
            except PortTaken:
                if not self.chosen or attempt == 2:
                    raise
                self.port = free_port(cluster=self.cluster)
        raise AssertionError("unreachable")

    def _start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "redis.log"
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir), "--logfile", str(log), *self.extra]
        process = self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        with redis.Redis(port=self.port, socket_timeout=5) as client:

            def ours() -> bool:  # the redis-server we started, not another that has this port
                if process.poll() is not None:
                    self.process = None
                    said = log.read_text(errors="replace").strip()[-300:] if log.exists() else ""
                    if "Address already in use" in said:
                        raise PortTaken(f"port {self.port} was taken: {said}")
                    raise RuntimeError(f"redis-server on port {self.port} exited: {said}")
                try:
                    return int(client.info("server")["process_id"]) == process.pid
                except redis.RedisError:  # not listening yet, or not a Redis of ours
                    return False

            try:
                wait_until(ours, f"redis-server on port {self.port}", 10)
            except BaseException:
                self.stop()
                raise
        self.chosen = False  # from now on its clients know its address: keep it
        return self

    def stop(self) -> None:
        """Kill it (SIGKILL: no goodbye to its clients or its cluster)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class PortTaken(RuntimeError):
    """A redis-server could not listen: another process took the port since it was found free."""


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
    """Three masters on free ports, joined with redis-cli --cluster create.

    With ``replicas``, one replica each, every one in sync before ``start`` returns (a master
    killed earlier has no replica able to take over), and a short node timeout. A replica takes
    over a dead master only once ``fail_over`` lets it, so that a test sees the outage first,
    as long as it likes. ``full_coverage`` is every node's ``cluster-require-full-coverage``.
    Each wait is bounded: a cluster that does not get there fails its test in seconds."""

    def __init__(self, workdir: Path, *, replicas: bool = False, full_coverage: bool = True) -> None:
        extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-require-full-coverage",
            "yes" if full_coverage else "no",
        ]
        if replicas:
            extra += [
                # A master not heard from in 2 s is failing: a failover in seconds, yet no
                # false alarm when a loaded machine delays a ping.
                "--cluster-node-timeout",
                "2000",
                "--repl-diskless-sync-delay",  # Redis 7.0 waits 5 s for more replicas before a sync
                "0",
                "--cluster-replica-no-failover",  # until fail_over()
                "yes",
                "--cluster-replica-validity-factor",  # however long the test kept it waiting
                "0",
            ]
        else:
            extra += ["--cluster-node-timeout", "15000"]
        self.replicas = replicas
        self.full_coverage = full_coverage
        self.nodes = [RedisServer(workdir, None, *extra) for _ in range(6 if replicas else 3)]
        self._clients: dict[int, redis.Redis] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except BaseException:
            self.stop()  # nothing left running by a cluster that did not form
            raise
        return self

    def _form(self) -> None:
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
        wait_until(self._formed, "the test cluster to form", 60)
        if self.replicas:
            wait_until(self._in_sync, "every replica to be in sync with its master", 60)

    def _live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None]

    def _client(self, node: RedisServer) -> redis.Redis:
        if node.port not in self._clients:
            self._clients[node.port] = redis.Redis(port=node.port, socket_timeout=5, decode_responses=True)
        return self._clients[node.port]

    def _states(self) -> set[str]:
        """What the live nodes say of the cluster: {"ok"}, {"fail"}, or both."""
        return {self._client(n).cluster("info")["cluster_state"] for n in self._live()}

    def _views(self) -> list[list[tuple[str, set[str], str]]]:
        """Each live node's CLUSTER NODES: (address, flags, id of the master it replicates)."""
        views = []
        for node in self._live():
            rows = self._client(node).cluster("nodes").items()
            views.append(
                [(at, set(row["flags"].split(",")) - {"myself"}, row["master_id"]) for at, row in rows]
            )
        return views

    def _formed(self) -> bool:
        """Every node says the cluster is ok, knows every node, and agrees on who replicates whom."""
        if self._states() != {"ok"}:
            return False
        views = [
            sorted((address, "master" in flags, master) for address, flags, master in v)
            for v in self._views()
        ]
        return all(len(view) == len(self.nodes) and view == views[0] for view in views)

    def _in_sync(self) -> bool:
        """Every replica's link to its master is up, and its master counts it online."""
        for node in self.nodes:
            info = self._client(node).info("replication")
            if info["role"] == "slave" and info["master_link_status"] != "up":
                return False
            if info["role"] == "master" and not (
                info["connected_slaves"] == 1 and info["slave0"]["state"] == "online"
            ):
                return False
        return True

    def replicated(self, node: RedisServer, timeout: float = 30) -> int:
        """How many replicas of master ``node`` acknowledged every write it took so far, once
        one has or ``timeout`` passed (WAIT). Replication is asynchronous: a master killed
        before its replica got a write loses it in the failover, as a real one would."""
        with redis.Redis(port=node.port, socket_timeout=timeout + 5) as client:  # WAIT blocks
            return int(client.wait(1, int(timeout * 1000)))

    def kill(self, node: RedisServer) -> None:
        """SIGKILL ``node``; return once every other node has marked it failing (and, under full
        coverage, says the cluster is down)."""
        node.stop()
        address = f"127.0.0.1:{node.port}"

        def failing() -> bool:
            marked = all("fail" in flags for view in self._views() for at, flags, _ in view if at == address)
            return marked and (not self.full_coverage or self._states() == {"fail"})

        wait_until(failing, f"the cluster to see port {node.port} fail", 30)

    def fail_over(self) -> None:
        """Let the replicas take over the dead masters; return once they have and every live node
        says the cluster is ok."""
        for node in self._live():
            self._client(node).config_set("cluster-replica-no-failover", "no")
        dead = {f"127.0.0.1:{n.port}" for n in self.nodes if n.process is None}

        def served() -> bool:
            views = [
                {at for at, flags, _ in v if "master" in flags and "fail" not in flags} for v in self._views()
            ]
            return self._states() == {"ok"} and all(len(v) == 3 and not v & dead for v in views)

        wait_until(served, "a replica to take over", 30)

    def master_of(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now."""
        client = self._client(self._live()[0])
        slot = client.cluster("keyslot", key)
        for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == master[1])
        raise RuntimeError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
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
