"""Shared pieces for the plugin's tests: a real TileLang CPU kernel module for inner runs."""

import json
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
from kernel_sources import KERNELS


@pytest.fixture
def tl(pytester, tmp_path):
    """A pytester with the kernel module written and a fresh cache dir; returns a runner."""
    pytester.makepyfile(kernels=KERNELS)
    cache = tmp_path / "tlcache"

    class Runner:
        cache_dir = cache
        junit = tmp_path / "junit.xml"

        def run(self, *args, subprocess=False):
            argv = [f"--tl-cache-dir={cache}", "-p", "no:cacheprovider", f"--junitxml={self.junit}", *args]
            if subprocess:
                return pytester.runpytest_subprocess(*argv)
            return pytester.runpytest(*argv)

        def properties(self):
            """{test name: [(property, value), ...]} from the last junit XML."""
            root = ET.parse(self.junit).getroot()
            out = {}
            for case in root.iter("testcase"):
                out.setdefault(case.get("name"), []).extend(
                    (p.get("name"), p.get("value")) for p in case.iter("property"))
            return out

        def prop(self, test, name):
            return [v for k, v in self.properties()[test] if k == name]

        def failures(self):
            """{test name: its failure message} from the last junit XML. Unlike the terminal's short
            summary, which pytest cuts to the terminal's width except where CI is set, it is whole."""
            root = ET.parse(self.junit).getroot()
            return {case.get("name"): case.find("failure").get("message")
                    for case in root.iter("testcase") if case.find("failure") is not None}

    return Runner()


def load_json(path):
    with open(path) as f:
        return json.load(f)


class RedisServer:
    """One real ``redis-server`` process on 127.0.0.1 (no persistence), with a client to inspect it."""

    def __init__(self, binary, workdir):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--logfile", str(workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {(workdir / 'redis.log').read_text()}") from None
                time.sleep(0.05)

    def values(self):
        """{key: value} of everything stored."""
        return {k.decode(): self.client.get(k) for k in self.client.scan_iter(count=1000)}

    def stop(self):
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a test may have stopped it
            self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory):
    """Start Debian's ``redis-server`` (as many as a test asks for); all stop at the end of the session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); the store tests need a real one")
    pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[test]')")
    servers = []

    def start():
        servers.append(RedisServer(binary, tmp_path_factory.mktemp("redis")))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(redis_servers):
    return redis_servers()


@pytest.fixture
def store(redis_server):
    """The session's Redis server, emptied for this test."""
    redis_server.client.flushall()
    return redis_server
