"""A real MySQL-compatible server on demand, for tests, demos and benchmarks.

Backends, in order (see :func:`mysql_server`):

1. ``KSTREAMLET_MYSQL_URL`` — an existing server, used as is
   (``mysql://user:password@host:port/database``).
2. Testcontainers' MySQL module, when a Docker engine answers
   (image ``KSTREAMLET_MYSQL_IMAGE``, default ``mysql:8.4``).
3. :class:`LocalMariaDB` — the OS package's ``mariadbd`` (Debian: ``apt-get install -y
   mariadb-server``) run privately from a temp dir on a free 127.0.0.1 port. It starts
   in about a second and is removed again by :meth:`LocalMariaDB.stop`.

Every backend yields a :class:`MySQLEndpoint` whose user may run XA (two-phase commit)
including ``XA RECOVER``, and whose prepared XA transactions survive the client
disconnecting — the property kstreamlet's exactly-once MySQL sink relies on.

Example::

    from kstreamlet.dev.mysql import mysql_server

    with mysql_server() as db:
        conn = db.connect()
        print(db.url)

Command line: ``kstreamlet dev mysql up|down|status`` runs a detached local MariaDB for
development (:func:`dev_up`); ``python -m kstreamlet.dev.mysql`` starts a server in the
foreground, prints its URL and waits for Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from kstreamlet.dev._process import live_state, stop_pid
from kstreamlet.dev._net import docker_available, free_port, port_in_use
from kstreamlet.sinks.mysql.url import MySQLEndpoint, mask_url, parse_mysql_url

if TYPE_CHECKING:  # PyMySQL is an optional dependency (``kstreamlet[mysql]``); import it lazily.
    import pymysql.connections

log = logging.getLogger("kstreamlet.dev.mysql")

#: Database, user and password that the dev backends (Testcontainers, local MariaDB) create.
DEFAULT_DATABASE = "kstreamlet"
DEFAULT_USER = "kstreamlet"
DEFAULT_PASSWORD = "kstreamlet"

#: Image for the Testcontainers backend. MySQL 8.4 is the current LTS line.
MYSQL_IMAGE = os.environ.get("KSTREAMLET_MYSQL_IMAGE", "mysql:8.4")

_INSTALL_HINT = (
    "Install MariaDB's server with `apt-get install -y mariadb-server` (Debian/Ubuntu), "
    "or point KSTREAMLET_MYSQL_URL at an existing server, or run a Docker engine for Testcontainers."
)
# /usr/sbin is where Debian puts mariadbd, and it is not on an ordinary user's PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/mysql/bin")
# A Unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux, 104 on macOS).
_MAX_SOCKET_PATH = 100
# Names we put into SQL as identifiers; restricting them avoids quoting problems.
_IDENT = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class MySQLStartError(RuntimeError):
    """No server could be provided; the message says what is missing and how to fix it."""


# --- helpers ----------------------------------------------------------------------------------


def _find_binary(names: Sequence[str], env_var: str) -> str:
    """Path of the first of ``names`` found (``env_var`` overrides), else a clear MySQLStartError."""
    override = os.environ.get(env_var)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise MySQLStartError(f"{env_var}={override!r} is not an executable file")
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BIN_DIRS])
    for name in names:
        path = shutil.which(name, path=search)
        if path:
            return path
    raise MySQLStartError(
        f"`{names[0]}` was not found (looked on PATH and in {', '.join(_EXTRA_BIN_DIRS)}); "
        f"the local MySQL backend needs it. {_INSTALL_HINT}"
    )


# --- local MariaDB ----------------------------------------------------------------------------


class _PortTaken(Exception):
    """mariadbd could not bind its port (someone took it between our check and its bind)."""


class LocalMariaDB:
    """A private ``mariadbd`` in a temp dir, for tests and demos.

    :meth:`start` initialises a fresh data dir with ``mariadb-install-db``, runs
    ``mariadbd`` on a free 127.0.0.1 port (plus a Unix socket in the temp dir), waits
    until it accepts connections, and creates the database and a user with all
    privileges (``ALL ON *.*``, more than ``XA RECOVER`` needs anywhere). ``.endpoint``
    says where to connect. :meth:`stop` shuts it down and removes the temp dir.

    Nothing is read from ``/etc/mysql``: both programs get ``--no-defaults`` so a system
    MariaDB's configuration (or service) cannot interfere.

    Settings chosen for tests: no binary log (XA is then coordinated by InnoDB alone —
    prepared XA transactions still survive client disconnects on MariaDB >= 10.5),
    a 64 MiB buffer pool and 8 MiB redo log (small, fast to create), and
    ``innodb_flush_log_at_trx_commit=2`` (commits survive a kill -9 of mariadbd, only
    not a power loss — irrelevant for a throwaway server, and much faster).
    """

    backend = "local-mariadb"

    def __init__(
        self,
        *,
        port: int | None = None,
        database: str = DEFAULT_DATABASE,
        user: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        workdir: Path | str | None = None,
        keep_dir: bool = False,
        buffer_pool_size: str = "64M",
        extra_args: Sequence[str] = (),
    ) -> None:
        for what, name in (("database", database), ("user", user)):
            if not _IDENT.match(name):
                raise ValueError(f"{what} name {name!r} must match {_IDENT.pattern}")
        self.port = port
        self.database = database
        self.user = user
        self.password = password
        self._own_dir = workdir is None
        self.workdir: Path | None = Path(workdir) if workdir is not None else None
        self.keep_dir = keep_dir
        self.buffer_pool_size = buffer_pool_size
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        #: Seconds from :meth:`start` being called to the server accepting the user's logins.
        self.startup_seconds = 0.0
        self._endpoint: MySQLEndpoint | None = None
        self._installed = False

    # paths inside the work dir
    def _path(self, name: str) -> Path:
        if self.workdir is None:
            raise RuntimeError("LocalMariaDB has not been started")
        return self.workdir / name

    @property
    def error_log(self) -> Path:
        """mariadbd's ``--log-error`` file."""
        return self._path("error.log")

    @property
    def socket_path(self) -> Path:
        """The server's Unix socket (root can log in there without a password)."""
        return self._path("mysqld.sock")

    @property
    def endpoint(self) -> MySQLEndpoint:
        """Where to connect, as the created user, once :meth:`start` has returned."""
        if self._endpoint is None:
            raise RuntimeError("LocalMariaDB is not running; call start() or use it as a context manager")
        return self._endpoint

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the error log (and of the programs' console output)."""
        out: list[str] = []
        # install.log is only interesting when installing failed; it is long and chatty otherwise.
        names = ("console.log", "error.log") if self._installed else ("install.log", "console.log", "error.log")
        for name in names:
            try:
                text = self._path(name).read_text(errors="replace")
            except (OSError, RuntimeError):
                continue
            if text.strip():
                out.append(f"--- {name} (last {lines} lines) ---")
                out.extend(text.splitlines()[-lines:])
        return "\n".join(out) if out else "(no log output)"

    def start(self, timeout: float = 60.0) -> "LocalMariaDB":
        """Initialise, start and provision the server; raise :class:`MySQLStartError` on failure."""
        if self.proc is not None:
            raise RuntimeError("LocalMariaDB is already started")
        t0 = time.monotonic()
        deadline = t0 + timeout
        # Look for the binaries before creating anything, so the commonest failure is cheap and clear.
        mariadbd = _find_binary(("mariadbd", "mysqld"), "KSTREAMLET_MARIADBD")
        install_db = _find_binary(("mariadb-install-db", "mysql_install_db"), "KSTREAMLET_MARIADB_INSTALL_DB")
        if self.port is not None and port_in_use(self.port):
            raise MySQLStartError(f"port {self.port} on 127.0.0.1 is already in use; choose another or omit it")
        self._make_workdir()
        self._installed = False
        atexit.register(self.stop)  # never leave an orphan mariadbd behind if the caller forgets stop()
        try:
            self._install(install_db, deadline)
            # With an auto-picked port another process may grab it before mariadbd binds; retry then.
            attempts = 1 if self.port is not None else 3
            for attempt in range(attempts):
                port = self.port if self.port is not None else free_port()
                self._launch(mariadbd, port)
                try:
                    root = self._wait_ready(deadline, timeout)
                except _PortTaken:
                    self._terminate()
                    if attempt + 1 < attempts:
                        log.info("port %d was taken before mariadbd could bind it; retrying", port)
                        continue
                    raise MySQLStartError(f"port {port} on 127.0.0.1 is already in use (mariadbd could not bind it)") from None
                break
            try:
                self._provision(root)
            finally:
                root.close()
            endpoint = MySQLEndpoint("127.0.0.1", port, self.user, self.password, self.database)
            self._check_login(endpoint, deadline, timeout)
        except MySQLStartError as e:
            tail = self.log_tail()
            self.stop()
            raise MySQLStartError(f"{e}\n{tail}") from None
        except BaseException:
            self.stop()
            raise
        self._endpoint = endpoint
        self._mariadbd = mariadbd
        self.startup_seconds = time.monotonic() - t0
        log.debug("local MariaDB ready at %s in %.2fs (dir %s)", endpoint.url, self.startup_seconds, self.workdir)
        return self

    # --- fault injection (data dir, port and credentials are kept) -------------------------------

    def kill(self) -> None:
        """``kill -9`` mariadbd (no clean InnoDB shutdown: prepared XA transactions must survive it)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)

    def restart(self, timeout: float = 60.0) -> None:
        """Start mariadbd again on the same data dir and port after :meth:`kill` (crash recovery runs)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("mariadbd is still running; kill() it first")
        endpoint = self.endpoint
        self._launch(self._mariadbd, endpoint.port)
        self._wait_ready(time.monotonic() + timeout, timeout).close()

    def _make_workdir(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kstreamlet-mariadb-"))
            if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
                # A long $TMPDIR (macOS, some CI) would make the socket path unusable; /tmp is short.
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = Path(tempfile.mkdtemp(prefix="kstreamlet-mariadb-", dir="/tmp"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)

    def _user_args(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; as anyone else --user only warns.
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            return ["--user=root"]
        return []

    def _innodb_args(self) -> list[str]:
        # The same redo log size for install-db and mariadbd, so the first start does not resize it.
        return [
            f"--innodb-buffer-pool-size={self.buffer_pool_size}",
            "--innodb-log-file-size=8M",
            # io_uring / libaio are often blocked by container seccomp profiles; tests do little I/O.
            "--innodb-use-native-aio=0",
        ]

    def _install(self, install_db: str, deadline: float) -> None:
        datadir = self._path("data")
        cmd = [
            install_db,
            "--no-defaults",  # must come first; ignore /etc/mysql/*.cnf
            f"--datadir={datadir}",
            # "normal": root@localhost without a password (we only expose it on our private socket).
            # The default "socket" method would tie root to the OS user running this.
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",  # no DNS lookups: faster, and works without a resolver
            *self._user_args(),
            *self._innodb_args(),
        ]
        remaining = max(1.0, deadline - time.monotonic())
        with open(self._path("install.log"), "wb") as out:
            try:
                res = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=remaining)
            except subprocess.TimeoutExpired:
                raise MySQLStartError(f"`{' '.join(cmd)}` did not finish within {remaining:.1f}s") from None
        if res.returncode != 0:
            raise MySQLStartError(f"`{' '.join(cmd)}` failed with exit code {res.returncode}")
        self._installed = True

    def _launch(self, mariadbd: str, port: int) -> None:
        # Start from an empty error log so the port-taken check below only sees this attempt.
        with contextlib.suppress(OSError):
            self.error_log.unlink()
        cmd = [
            mariadbd,
            "--no-defaults",  # must come first; ignore /etc/mysql/*.cnf
            f"--datadir={self._path('data')}",
            f"--socket={self.socket_path}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self._path('mysqld.pid')}",
            f"--log-error={self.error_log}",
            f"--tmpdir={self._path('tmp')}",
            "--skip-log-bin",  # XA needs no binlog on MariaDB; without it commits are cheaper
            "--skip-name-resolve",
            "--innodb-flush-log-at-trx-commit=2",  # survives kill -9 of mariadbd; see class docstring
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            "--max-connections=500",  # chaos tests run many worker processes at once
            *self._user_args(),
            *self._innodb_args(),
            *self.extra_args,
        ]
        with open(self._path("console.log"), "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal is handled by us (clean stop), not mariadbd
            )

    def _wait_ready(self, deadline: float, timeout: float) -> "pymysql.connections.Connection":
        """Poll the Unix socket as root until a login works; return that connection."""
        import pymysql

        last_error: Exception | None = None
        while True:
            assert self.proc is not None
            code = self.proc.poll()
            if code is not None:
                log_text = self._read(self.error_log)
                if "Address already in use" in log_text or "Bind on TCP/IP port" in log_text:
                    raise _PortTaken()
                raise MySQLStartError(f"mariadbd exited with code {code} before accepting connections")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MySQLStartError(
                    f"mariadbd did not accept connections within {timeout:g}s of start() (last error: {last_error})"
                )
            if self.socket_path.exists():
                try:
                    return pymysql.connect(
                        unix_socket=str(self.socket_path),
                        user="root",
                        password="",
                        autocommit=True,
                        connect_timeout=max(1, min(5, int(remaining))),
                    )
                except pymysql.err.MySQLError as e:
                    if e.args and e.args[0] == 1045:  # access denied: waiting will not fix that
                        raise MySQLStartError(f"mariadbd refused root on its own socket: {e}") from None
                    last_error = e
            time.sleep(0.05)

    def _provision(self, root: "pymysql.connections.Connection") -> None:
        """Create the database and the user, with every privilege XA needs."""
        import pymysql

        try:
            with root.cursor() as cur:
                # mariadb-install-db's "normal" auth also creates password-less root accounts for
                # TCP (127.0.0.1, ::1, the host name), which any local user could use on our port.
                # Keep only root@localhost, i.e. the Unix socket inside our 0700 temp dir.
                # Anonymous accounts, if any, would shadow our user for local logins: drop them too.
                cur.execute("SELECT User, Host FROM mysql.user WHERE User = '' OR (User = 'root' AND Host <> 'localhost')")
                for user, host in cur.fetchall():
                    cur.execute("DROP USER %s@%s", (user, host))
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                # '%' covers TCP from 127.0.0.1 (with skip-name-resolve); 'localhost' covers the socket.
                for host in ("%", "localhost"):
                    # escape() instead of %s parameters: the '%' host would clash with PyMySQL's %-formatting.
                    cur.execute(f"CREATE USER IF NOT EXISTS '{self.user}'@'{host}' IDENTIFIED BY {root.escape(self.password)}")
                    # ON *.*, not ON db.*: XA transactions are server-wide, and MySQL 8 gates XA RECOVER
                    # behind the global XA_RECOVER_ADMIN. (MariaDB 10.11 lets any user run it, but the
                    # same grant on every backend keeps test results independent of the backend.)
                    cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{self.user}'@'{host}' WITH GRANT OPTION")
        except pymysql.err.MySQLError as e:
            raise MySQLStartError(f"creating database/user on the local MariaDB failed: {e}") from None

    def _check_login(self, endpoint: MySQLEndpoint, deadline: float, timeout: float) -> None:
        """Prove the endpoint we hand out works: TCP, the user's password, the database."""
        import pymysql

        while True:
            try:
                endpoint.connect(connect_timeout=5).close()
                return
            except pymysql.err.MySQLError as e:
                # Only "cannot connect" (2003) / "lost connection" (2013) may pass; the rest is real.
                if (e.args and e.args[0] not in (2003, 2013)) or time.monotonic() >= deadline:
                    raise MySQLStartError(
                        f"mariadbd is up but logging in as {endpoint.user} over TCP port {endpoint.port} "
                        f"failed within {timeout:g}s of start(): {e}"
                    ) from None
            time.sleep(0.05)

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def _terminate(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean InnoDB shutdown), then SIGKILL if it does not exit in time."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("mariadbd (pid %d) did not stop within %.0fs of SIGTERM; killing it", proc.pid, timeout)
                proc.kill()
                proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down and remove its temp dir (unless ``keep_dir``). Idempotent."""
        self._endpoint = None
        self._terminate(timeout)
        atexit.unregister(self.stop)
        if self.workdir is not None and self._own_dir and not self.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "LocalMariaDB":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Testcontainers ---------------------------------------------------------------------------


@contextlib.contextmanager
def _testcontainers_mysql(timeout: float) -> Iterator[tuple[MySQLEndpoint, float]]:  # pragma: no cover - needs Docker
    try:
        from testcontainers.community.mysql import MySqlContainer  # testcontainers >= 4.15
    except ImportError:
        try:
            with warnings.catch_warnings():
                # Older 4.x releases only have this path; newer ones keep it as a deprecated alias.
                warnings.simplefilter("ignore", DeprecationWarning)
                from testcontainers.mysql import MySqlContainer  # type: ignore[no-redef,unused-ignore]
        except ImportError:
            raise MySQLStartError(
                "the Testcontainers backend needs the testcontainers package: pip install 'kstreamlet[testcontainers]'"
            ) from None
    import pymysql

    t0 = time.monotonic()
    container = MySqlContainer(
        MYSQL_IMAGE,
        username=DEFAULT_USER,
        password=DEFAULT_PASSWORD,
        root_password=DEFAULT_PASSWORD,
        dbname=DEFAULT_DATABASE,
    )
    with container as c:
        host = c.get_container_host_ip()
        port = int(c.get_exposed_port(3306))
        endpoint = MySQLEndpoint(host, port, DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_DATABASE)
        root = MySQLEndpoint(host, port, "root", DEFAULT_PASSWORD, DEFAULT_DATABASE)
        # The image's MYSQL_USER only gets privileges on its database; XA RECOVER needs more
        # (XA_RECOVER_ADMIN on MySQL 8, which ALL ON *.* includes; likewise on MariaDB images).
        deadline = t0 + timeout
        while True:
            try:
                with contextlib.closing(root.connect(autocommit=True, connect_timeout=5)) as conn:
                    with conn.cursor() as cur:
                        cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{DEFAULT_USER}'@'%'")
                break
            except pymysql.err.MySQLError as e:
                # The log said "ready" but the mapped port may lag a moment behind: retry only
                # "cannot connect" (2003) / "lost connection" (2013); anything else is real.
                if e.args[0] not in (2003, 2013) or time.monotonic() >= deadline:
                    raise MySQLStartError(f"MySQL container {MYSQL_IMAGE} did not accept root logins: {e}") from None
                time.sleep(0.2)
        yield endpoint, time.monotonic() - t0


# --- choosing a backend -----------------------------------------------------------------------


def _have_testcontainers() -> bool:
    if importlib.util.find_spec("testcontainers") is not None:
        return True
    # Docker answers but the package is missing: the local backend still works, so only say so.
    log.info("a Docker engine answers but testcontainers is not installed; using the local MariaDB")
    return False


def _announce(backend: str, url: str, seconds: float) -> None:
    log.info("MySQL backend %s ready at %s in %.2fs", backend, url, seconds)
    print(f"kstreamlet: MySQL ({backend}) ready at {url} in {seconds:.2f}s", file=sys.stderr, flush=True)


@contextlib.contextmanager
def mysql_server(
    prefer: str | None = None, *, timeout: float = 60.0, port: int | None = None
) -> Iterator[MySQLEndpoint]:
    """Yield a running MySQL-compatible server from the first backend that is available.

    Order: ``KSTREAMLET_MYSQL_URL`` (used as is) → Testcontainers ``MySqlContainer`` when
    :func:`docker_available` → :class:`LocalMariaDB`. ``prefer`` (or
    ``KSTREAMLET_MYSQL_BACKEND``) forces one of ``external``, ``testcontainers``, ``local``.
    ``timeout`` bounds the start-up; ``port`` fixes the local MariaDB's port.

    Raises:
        MySQLStartError: if the chosen backend cannot be started.
        ValueError: if ``KSTREAMLET_MYSQL_URL`` is not a valid MySQL URL.
    """
    prefer = prefer or os.environ.get("KSTREAMLET_MYSQL_BACKEND") or None
    if prefer not in (None, "external", "testcontainers", "local"):
        raise ValueError(f"unknown MySQL backend {prefer!r}; use external, testcontainers or local")
    external = os.environ.get("KSTREAMLET_MYSQL_URL")
    if prefer == "external" and not external:
        raise MySQLStartError("the external MySQL backend was requested but KSTREAMLET_MYSQL_URL is not set")
    if prefer in (None, "external") and external:
        endpoint = parse_mysql_url(external)
        _announce("external KSTREAMLET_MYSQL_URL", mask_url(endpoint.url), 0.0)
        yield endpoint
        return
    if prefer == "testcontainers" or (prefer is None and docker_available() and _have_testcontainers()):
        with _testcontainers_mysql(timeout) as (endpoint, seconds):
            _announce(f"testcontainers {MYSQL_IMAGE}", endpoint.url, seconds)
            yield endpoint
        return
    with LocalMariaDB(port=port) as db:
        _announce(LocalMariaDB.backend, db.endpoint.url, db.startup_seconds)
        yield db.endpoint


# --- a long-lived dev server for people (``kstreamlet dev mysql up|down|status``) -------------


def _dev_state_file() -> Path:
    from kstreamlet.dev.kafka import cache_dir

    return cache_dir() / "dev-mysql.json"


def dev_status() -> dict[str, object] | None:
    """The running dev MariaDB's state (``pid``, ``url``, ``port``, ``workdir``), or None."""
    return live_state(_dev_state_file())


def dev_up(port: int | None = None, timeout: float = 60.0) -> dict[str, object]:
    """Start a detached local MariaDB that outlives this process (on ``port``, else a free one).

    Idempotent like ``kstreamlet dev kafka up``: a running one is returned (``"started": False``)
    unless another port is asked for, which is a :class:`MySQLStartError`."""
    import json

    state = dev_status()
    if state:
        if port is not None and int(state["port"]) != port:  # type: ignore[call-overload]
            raise MySQLStartError(
                f"a dev MariaDB is already running on port {state['port']} (pid {state['pid']}), not on {port}; "
                "use it, or stop it first with `kstreamlet dev mysql down`")
        return {**state, "started": False}
    from kstreamlet.dev.kafka import cache_dir

    workdir = cache_dir() / "dev-mysql"
    if len(str(workdir / "mysqld.sock")) > _MAX_SOCKET_PATH:
        workdir = Path(tempfile.mkdtemp(prefix="kstreamlet-dev-mysql-", dir="/tmp"))
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    db = LocalMariaDB(port=port, workdir=workdir, keep_dir=True)
    db.start(timeout)
    atexit.unregister(db.stop)  # detached: it stays up after this process exits
    assert db.proc is not None
    state = {"pid": db.proc.pid, "url": db.endpoint.url, "port": db.endpoint.port, "workdir": str(workdir),
             "startup_seconds": round(db.startup_seconds, 2)}
    _dev_state_file().parent.mkdir(parents=True, exist_ok=True)
    _dev_state_file().write_text(json.dumps(state))
    return {**state, "started": True}


def dev_down(timeout: float = 30.0) -> bool:
    """Stop the dev MariaDB (clean shutdown, SIGKILL after ``timeout``); whether one was running."""
    state = dev_status()
    if not state:
        return False
    stop_pid(int(state["pid"]), timeout)  # type: ignore[call-overload]
    _dev_state_file().unlink(missing_ok=True)
    shutil.rmtree(str(state["workdir"]), ignore_errors=True)
    return True


# --- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kstreamlet.dev.mysql``: start a server, print its URL, wait for Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m kstreamlet.dev.mysql",
        description="Start a MySQL-compatible server for development; print its URL; stop it on Ctrl-C.",
    )
    parser.add_argument("--backend", choices=("external", "testcontainers", "local"), default=None,
                        help="force a backend (default: KSTREAMLET_MYSQL_URL, then Docker, then local MariaDB)")
    parser.add_argument("--port", type=int, default=None, help="fixed 127.0.0.1 port for the local MariaDB")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server (default 60)")
    args = parser.parse_args(argv)

    def _on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # same clean shutdown path as Ctrl-C

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with mysql_server(args.backend, timeout=args.timeout, port=args.port) as endpoint:
            print(endpoint.url, flush=True)
            print("Press Ctrl-C to stop.", file=sys.stderr, flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except (MySQLStartError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
