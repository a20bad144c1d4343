"""A throwaway Ray cluster for tests and benchmarks: one head node started with
`ray start` on the loopback address only, in its own process group, stopped
with everything it started (also when the test fails).

Ray's single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) makes every
address Ray advertises 127.0.0.1, so nothing leaves this machine. The same
environment is handed to the drivers (`env`)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
       "RAY_AUTH_MODE": "token", "RAY_DEDUP_LOGS": "0", "OMP_WAIT_POLICY": "PASSIVE"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, num_cpus: int = 2, object_store_mb: int = 100):
        self.num_cpus, self.object_store_mb = num_cpus, object_store_mb
        # Ray 2.5x+ refuses token auth without a token: a fresh one per cluster, handed to its drivers
        self.env = os.environ | ENV | {"RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.temp = self.address = self.pgid = None
        self.startup_seconds = None

    def __enter__(self):
        # short: Ray's unix socket paths live under it and must stay under 108 bytes
        self.temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        self.address = f"127.0.0.1:{_free_port()}"
        ray = Path(sys.executable).with_name("ray")
        cmd = [str(ray), "start", "--head", "--node-ip-address", "127.0.0.1",
               "--port", self.address.split(":")[1], "--num-cpus", str(self.num_cpus),
               "--include-dashboard=false", "--object-store-memory", str(self.object_store_mb * 10 ** 6),
               "--temp-dir", self.temp, "--disable-usage-stats"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=self.env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.pgid = proc.pid       # the session `ray start` leads: every Ray process of this cluster
        try:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"ray start failed:\n{out}")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - start
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def processes(self) -> list:
        """This cluster's processes still alive (found by its temp dir on their command lines)."""
        import ray  # noqa: F401  (Ray brings its own copy of psutil onto the path)
        import psutil

        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if self.temp and any(self.temp in part for part in p.info["cmdline"] or ()):
                    found.append(p)
            except psutil.Error:
                pass
        return found

    def stop(self) -> None:
        if self.pgid is not None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.pgid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and self._group_alive():
                    time.sleep(0.1)
                if not self._group_alive():
                    break
            for p in self.processes():        # anything that left the group: ours all the same
                p.kill()
            self.pgid = None
        if self.temp:
            shutil.rmtree(self.temp, ignore_errors=True)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
            return True
        except ProcessLookupError:
            return False
