"""A real ``zoo serve`` process on 127.0.0.1 for the server tests, and its registry."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, db_url: str | None = None, store_url: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_ENDPOINT", "ZOO_TOKEN")}
    env.update(ZOO_HOME=str(home), ZOO_DEVICE="cpu")
    env["ZOO_DB_URL"] = db_url or f"sqlite:///{home / 'zoo.db'}"
    env["ZOO_STORE_URL"] = store_url or str(home / "blobs")
    return env


class ZooServer:
    """``zoo serve`` in a subprocess; ``url`` once it answers."""

    def __init__(
        self, env: dict, *args: str, log: Path, cwd: Path | None = None, patch: str = ""
    ) -> None:
        """``patch``: Python run in the server's process before the command (a test's
        stand-in for a slow disk)."""
        self.env, self.args, self.log, self.cwd, self.patch = env, args, log, cwd, patch
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> ZooServer:
        cmd = [sys.executable, "-m", "zoo_cli.main", "serve", "--port", str(self.port)]
        if self.patch:
            run = f"{self.patch}\nfrom zoo_cli.main import command\ncommand()\n"
            cmd[1:3] = ["-c", run]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, *self.args],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"zoo serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"zoo serve did not start: {self.log.read_text()[-2000:]}")

    def alive(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def registry_for(env: dict):
    """The server's registry, opened directly (as an admin on its machine would)."""
    import zoo

    return zoo.connect(
        home=env["ZOO_HOME"], db_url=env["ZOO_DB_URL"], store_url=env["ZOO_STORE_URL"]
    )


def client(url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=120)
