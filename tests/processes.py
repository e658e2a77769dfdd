"""The server processes that test fixtures start: a port for one, and stopping it."""

from __future__ import annotations

import socket
import subprocess


def free_port() -> int:
    """A loopback port free right now.

    A server that needs its port number before it starts takes this one; the
    tiny window in which another process could take it first is acceptable
    for a test.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Ask a server to stop; kill it if it has not exited within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
