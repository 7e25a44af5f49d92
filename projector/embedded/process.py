"""A supervised child process: started by us, dies with us, reports its log tail."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from projector.errors import EmbeddedServerError

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child after any setuid: the kernel clears the parent-death
    # signal on a credential change, so it must be set here, not earlier.
    # Without it a SIGKILLed parent would leave an orphan server behind.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def drop_groups(user: str | None) -> list[str] | None:
    """``extra_groups`` for a child run as ``user``: none of root's groups.

    With ``user=`` alone the child keeps gid 0 and root's groups, so the group
    bits of root-owned directories, not the "other" bits, decide its access.
    """
    return [] if user else None


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """Return ``preferred`` if it can be bound on ``host``, else a free port."""
    if preferred:
        with socket.socket() as s:
            try:
                s.bind((host, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class ChildProcess:
    """One server process whose output goes to a log file.

    It runs in its own session, so a Ctrl-C in the terminal reaches only us and
    we stop it in order; a parent-death signal kills it if we are killed.
    """

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 user: str | None = None, env: dict[str, str] | None = None,
                 stop_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.user = user
        self.env = env
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, env=self.env, user=self.user, group=self.user,
                    extra_groups=drop_groups(self.user),
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise EmbeddedServerError(
                    f"could not start {self.name} ({self.argv[0]}): {exc}"
                ) from exc

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exit_code(self) -> int | None:
        """None while running (or never started)."""
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def died(self, what: str = "exited unexpectedly") -> EmbeddedServerError:
        code = self.exit_code()
        return EmbeddedServerError(
            f"{self.name} {what} (exit code {code}); its log is {self.log_path}",
            self.log_tail(),
        )

    def wait_until(self, ready: object, timeout_s: float, what: str) -> None:
        """Poll ``ready()`` until true; fail early if the process dies."""
        assert callable(ready)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.exit_code() is not None:
                raise self.died("exited during start-up")
            if ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(
                    f"{self.name} did not become ready within {timeout_s:.0f} s ({what}); "
                    f"its log is {self.log_path}",
                    self.log_tail(),
                )
            time.sleep(0.05)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the process to stop, then kill it after ``timeout_s``."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, self.stop_signal)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
