"""A team tracking stack on one box: PostgreSQL holding MLflow's runs and registry and Optuna's
studies, and ``mlflow server`` in front of it, serving the artifacts from a folder.

    emoexp stack up --dir DIR [--port 5000] [--pg-port Q] [--postgres-url URL] [--basic-auth]
    emoexp stack status --dir DIR
    emoexp stack down --dir DIR

PostgreSQL is a private cluster made with ``initdb`` in ``DIR/pg`` (as the ``postgres`` user when
run as root: PostgreSQL refuses to run as root), listening on 127.0.0.1 only, with a generated
password; or an existing server (``--postgres-url``), where the databases are created if missing.
Databases: ``mlflow`` (runs, registry), ``optuna`` (studies), ``mlflow_auth`` (users, with
``--basic-auth``). ``DIR/stack.json`` (mode 0600: it holds the passwords) records the ports, the
pids and the URLs; ``up`` on a folder that has one starts what is stopped and keeps the rest.
Every server binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from emoexp.config import OPTUNA_STORAGE_ENV, redact

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
STATE_FILE = "stack.json"
MLFLOW_DB, OPTUNA_DB, AUTH_DB = "mlflow", "optuna", "mlflow_auth"
PG_ROLE = "emoexp"          # the private cluster's (super)user
ADMIN_USER = "admin"        # basic-auth's admin
DEFAULT_PORT = 5000
START_TIMEOUT_S = 180.0     # `mlflow server` answers in 10-14 s idle; a busy 2-core box takes longer


class StackError(RuntimeError):
    """A stack that cannot start or stop; the message is one line that says why and what to do."""


@dataclass
class Stack:
    dir: str
    port: int
    pg_url: str                       # the server, as a maintenance URL (database postgres)
    managed_pg: bool                  # a private cluster in dir/pg (False: --postgres-url)
    pg_port: int | None = None
    basic_auth: bool = False
    admin_password: str = ""
    secret_key: str = ""
    mlflow_pid: int | None = None
    started: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def optuna_storage(self) -> str:
        return db_url(self.pg_url, OPTUNA_DB)

    @property
    def mlflow_backend(self) -> str:
        return db_url(self.pg_url, MLFLOW_DB)

    @property
    def pg_data(self) -> Path:
        return Path(self.dir) / "pg" / "data"

    def env(self) -> dict[str, str]:
        """What a client needs: the tracking URI, the Optuna storage and, with basic-auth, the admin's login."""
        out = {"MLFLOW_TRACKING_URI": self.tracking_uri, OPTUNA_STORAGE_ENV: self.optuna_storage}
        if self.basic_auth:
            out.update(MLFLOW_TRACKING_USERNAME=ADMIN_USER, MLFLOW_TRACKING_PASSWORD=self.admin_password)
        return out


# ---------------------------------------------------------------------------------------------
# small helpers


def db_url(server_url: str, database: str) -> str:
    """``server_url`` with its database (the URL's path) replaced by ``database``."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _libpq(url: str) -> str:
    """psycopg takes ``postgresql://`` URLs; SQLAlchemy's ``postgresql+driver://`` loses the driver."""
    scheme, rest = url.split("://", 1)
    if not scheme.startswith("postgres"):
        raise StackError(f"{redact(url)}: not a PostgreSQL URL (postgresql://user:password@host:port/db)")
    return "postgresql://" + rest


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def pg_bin(name: str) -> str:
    """A PostgreSQL server program: on the PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                      key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parts[-3].split(".")])
    if versions:
        return str(versions[-1])
    raise StackError(f"{name} not found: install the PostgreSQL server (apt-get install postgresql) "
                     "or use a server you have with --postgres-url postgresql://user:password@host:port/postgres")


def _as_root() -> bool:
    return os.geteuid() == 0


def _postgres_ids() -> tuple[int, int]:
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("running as root, but there is no 'postgres' user to run PostgreSQL as "
                         "(apt-get install postgresql makes one)") from None
    return pw.pw_uid, pw.pw_gid


def _as_pg_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the postgres user."""
    if not _as_root():
        return cmd
    runuser = shutil.which("runuser")
    if not runuser:
        raise StackError("running as root without runuser: run `emoexp stack up` as a normal user")
    return [runuser, "-u", "postgres", "--", *cmd]


def _check_traversable(path: Path, uid: int, gid: int) -> None:
    """Every folder above ``path`` must let the postgres user through."""
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise StackError(f"{p}: the postgres user cannot enter this folder (PostgreSQL runs as postgres, "
                             f"not root): `chmod o+x {p}` or choose a --dir under /srv or /tmp")


def _run(cmd: list[str], what: str, timeout: float = 120, cwd: str | None = None) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise StackError(f"{what}: no answer in {timeout:.0f} s") from None
    if out.returncode != 0:
        last = (out.stderr or out.stdout).strip().splitlines()
        raise StackError(f"{what} failed: {last[-1] if last else f'exit code {out.returncode}'}")
    return out.stdout


def _pid_alive(pid: int | None, needle: str = "") -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if needle:
        try:
            return needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 2.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# state


def state_path(dir: str | Path) -> Path:
    return Path(dir).resolve() / STATE_FILE


def load(dir: str | Path) -> Stack:
    p = state_path(dir)
    if not p.is_file():
        raise StackError(f"{p.parent}: no stack here (no {STATE_FILE}); start one with `emoexp stack up --dir {dir}`")
    doc = json.loads(p.read_text())
    return Stack(**{k: v for k, v in doc.items() if k in Stack.__dataclass_fields__})


def _save(stack: Stack) -> None:
    p = state_path(stack.dir)
    tmp = p.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the passwords
    with os.fdopen(fd, "w") as f:
        json.dump({**asdict(stack), "tracking_uri": stack.tracking_uri, "optuna_storage": stack.optuna_storage},
                  f, indent=2)
    os.replace(tmp, p)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_running(stack: Stack) -> bool:
    if not (stack.pg_data / "PG_VERSION").is_file():
        return False
    res = subprocess.run(_as_pg_user([pg_bin("pg_ctl"), "-D", str(stack.pg_data), "status"]),
                         capture_output=True, text=True, timeout=30)
    return res.returncode == 0


def _init_cluster(stack: Stack, password: str) -> None:
    pg_dir = stack.pg_data.parent
    pg_dir.mkdir(parents=True, exist_ok=True)
    if _as_root():
        uid, gid = _postgres_ids()
        _check_traversable(Path(stack.dir), uid, gid)
        os.chown(pg_dir, uid, gid)
    pg_dir.chmod(0o700)
    pwfile = pg_dir / "pwfile"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    if _as_root():
        os.chown(pwfile, *_postgres_ids())
    try:
        _run(_as_pg_user([pg_bin("initdb"), "-D", str(stack.pg_data), "-U", PG_ROLE, "-A", "scram-sha-256",
                          f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale"]),
             f"initdb of {stack.pg_data}", cwd=str(pg_dir))
    finally:
        pwfile.unlink(missing_ok=True)


def _start_cluster(stack: Stack) -> None:
    if port_in_use(stack.pg_port):
        raise StackError(f"PostgreSQL port {stack.pg_port} on {HOST} is in use (another server?): "
                         "choose another with --pg-port")
    # TCP on loopback only, no Unix socket (its path could exceed the 107-byte limit in a deep DIR)
    opts = f"-p {stack.pg_port} -c listen_addresses={HOST} -c unix_socket_directories=''"
    _run(_as_pg_user([pg_bin("pg_ctl"), "-D", str(stack.pg_data), "-o", opts,
                      "-l", str(stack.pg_data.parent / "postgres.log"), "-w", "-t", "60", "start"]),
         f"starting PostgreSQL (log: {stack.pg_data.parent / 'postgres.log'})", timeout=90,
         cwd=str(stack.pg_data.parent))


def _stop_cluster(stack: Stack) -> None:
    if _pg_running(stack):
        _run(_as_pg_user([pg_bin("pg_ctl"), "-D", str(stack.pg_data), "-m", "fast", "-w", "-t", "60", "stop"]),
             "stopping PostgreSQL", timeout=90, cwd=str(stack.pg_data.parent))


def _connect(url: str, timeout: float = 20.0):
    """A psycopg connection to ``url``, retried while the server is coming up (bounded)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(_libpq(url), autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as e:
            if time.monotonic() >= deadline:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise StackError(f"cannot connect to PostgreSQL at {redact(url)}: {first}") from None
            time.sleep(0.5)


def ensure_databases(server_url: str, names: tuple[str, ...]) -> None:
    import psycopg
    from psycopg import sql

    with _connect(server_url) as conn:
        for name in names:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                continue
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:  # another `up` made it meanwhile
                pass
            except psycopg.Error as e:
                raise StackError(f"cannot create database {name!r} on {redact(server_url)}: "
                                 f"{str(e).strip().splitlines()[0]} (create it yourself, or use a role with "
                                 "CREATEDB)") from None


# ---------------------------------------------------------------------------------------------
# MLflow server


def _mlflow_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "mlflow"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]


def _write_auth_config(stack: Stack) -> Path:
    path = Path(stack.dir) / "basic_auth.ini"
    text = ("[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {db_url(stack.pg_url, AUTH_DB)}\n"
            f"admin_username = {ADMIN_USER}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # one worker: password changes through the API reach its cache at once
            "auth_cache_ttl_seconds = 300\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def start_mlflow(stack: Stack, timeout: float = START_TIMEOUT_S) -> int:
    """Start ``mlflow server`` for ``stack`` in its own session and wait until it answers; -> pid."""
    if port_in_use(stack.port):
        raise StackError(f"port {stack.port} on {HOST} is in use (another server? `emoexp stack status`): "
                         "choose another with --port")
    art = Path(stack.dir) / "artifacts"
    art.mkdir(parents=True, exist_ok=True)
    cmd = [*_mlflow_cmd(), "server", "--artifacts-destination", str(art), "--host", HOST,
           "--port", str(stack.port), "--workers", "1"]
    # the database URL (with its password) goes in the environment: a command line is public (ps)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": stack.mlflow_backend}
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_RUN_ID"):
        env.pop(k, None)
    if stack.basic_auth:
        cmd += ["--app-name", "basic-auth"]
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(_write_auth_config(stack)),
                   MLFLOW_FLASK_SERVER_SECRET_KEY=stack.secret_key,
                   MLFLOW_AUTH_ADMIN_PASSWORD=stack.admin_password)
    log_path = Path(stack.dir) / "mlflow.log"
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=stack.dir, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not http_ok(f"{stack.tracking_uri}/health"):
        if proc.poll() is not None:
            tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
            raise StackError(f"mlflow server exited ({proc.returncode}): {tail[-1] if tail else '?'} "
                             f"(log: {log_path})")
        if time.monotonic() > deadline:
            _kill_group(proc.pid)
            raise StackError(f"mlflow server did not answer in {timeout:.0f} s (log: {log_path})")
        time.sleep(0.5)
    return proc.pid


def _kill_group(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM the process group ``pid`` leads (the server and its workers), SIGKILL after ``grace_s``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it
        except ChildProcessError:
            waited = 0
        if waited == pid or not _pid_alive(pid):
            break
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_mlflow(stack: Stack) -> bool:
    """Stop the stack's MLflow server if it runs; True if it did."""
    if not _pid_alive(stack.mlflow_pid, "mlflow"):
        return False
    _kill_group(stack.mlflow_pid)
    return True


# ---------------------------------------------------------------------------------------------
# the commands


def up(dir: str | Path, *, port: int | None = None, pg_port: int | None = None, postgres_url: str = "",
       basic_auth: bool | None = None, timeout: float = START_TIMEOUT_S) -> Stack:
    """Start (or complete) the stack in ``dir``; returns it, running."""
    root = Path(dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        stack = load(root)
    except StackError:
        stack = None
    if stack is None:
        managed = not postgres_url
        if managed:
            pg_bin("initdb")  # fail now, with the install hint, before anything is written
        else:
            _libpq(postgres_url)
        if port_in_use(port or DEFAULT_PORT):
            raise StackError(f"port {port or DEFAULT_PORT} on {HOST} is in use (another server?): "
                             "choose another with --port")
        stack = Stack(dir=str(root), port=port or DEFAULT_PORT, managed_pg=managed,
                      pg_port=(pg_port or free_port()) if managed else None, pg_url="",
                      basic_auth=bool(basic_auth))
        if managed:
            password = secrets.token_urlsafe(18)
            stack.pg_url = f"postgresql://{PG_ROLE}:{password}@{HOST}:{stack.pg_port}/postgres"
        else:
            stack.pg_url = db_url(postgres_url, urlsplit(postgres_url).path.strip("/") or "postgres")
    else:
        if postgres_url and db_url(postgres_url, "x") != db_url(stack.pg_url, "x"):
            raise StackError(f"{root} holds a stack on {redact(stack.pg_url)}; `emoexp stack down` it or choose another --dir")
        if pg_port and stack.managed_pg and pg_port != stack.pg_port:
            if _pg_running(stack):
                raise StackError(f"PostgreSQL of {root} runs on port {stack.pg_port}: `emoexp stack down` first")
            stack.pg_port = pg_port
            parts = urlsplit(stack.pg_url)
            stack.pg_url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{pg_port}"))
        if port and port != stack.port:
            if _pid_alive(stack.mlflow_pid, "mlflow"):
                raise StackError(f"the MLflow server of {root} runs on port {stack.port}: `emoexp stack down` first")
            stack.port = port
        if basic_auth is not None and basic_auth != stack.basic_auth:
            if _pid_alive(stack.mlflow_pid, "mlflow"):
                raise StackError(f"the MLflow server of {root} runs {'with' if stack.basic_auth else 'without'} "
                                 "basic-auth: `emoexp stack down` first")
            stack.basic_auth = basic_auth
    if stack.basic_auth:
        stack.secret_key = stack.secret_key or secrets.token_hex(24)
        # MLflow wants >= 12 characters; a given MLFLOW_AUTH_ADMIN_PASSWORD is used on the first start only
        stack.admin_password = stack.admin_password or os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") \
            or secrets.token_urlsafe(18)

    if stack.managed_pg:
        if not (stack.pg_data / "PG_VERSION").is_file():
            log.info("creating a PostgreSQL cluster in %s", stack.pg_data)
            _init_cluster(stack, urlsplit(stack.pg_url).password or "")
        if not _pg_running(stack):
            log.info("starting PostgreSQL on %s:%s", HOST, stack.pg_port)
            _start_cluster(stack)
        _save(stack)  # the cluster's password is only here
    ensure_databases(stack.pg_url, (MLFLOW_DB, OPTUNA_DB) + ((AUTH_DB,) if stack.basic_auth else ()))
    if _pid_alive(stack.mlflow_pid, "mlflow") and http_ok(f"{stack.tracking_uri}/health"):
        log.info("mlflow server already up at %s", stack.tracking_uri)
    else:
        log.info("starting mlflow server on %s (log: %s)", stack.tracking_uri, Path(stack.dir) / "mlflow.log")
        stack.mlflow_pid = start_mlflow(stack, timeout=timeout)
        stack.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _save(stack)
    return stack


def down(dir: str | Path, *, keep_postgres: bool = False) -> Stack:
    """Stop the stack's MLflow server and (unless ``keep_postgres``) its private PostgreSQL."""
    stack = load(dir)
    if stop_mlflow(stack):
        log.info("stopped mlflow server (pid %s)", stack.mlflow_pid)
    stack.mlflow_pid = None
    _save(stack)
    if stack.managed_pg and not keep_postgres:
        _stop_cluster(stack)
        log.info("stopped PostgreSQL (%s)", stack.pg_data)
    return stack


def status(dir: str | Path) -> dict:
    """Is each part up? ``{"mlflow": bool, "postgres": bool, ...}``."""
    stack = load(dir)
    mlflow_up = _pid_alive(stack.mlflow_pid, "mlflow") and http_ok(f"{stack.tracking_uri}/health")
    if stack.managed_pg:
        pg_up = _pg_running(stack)
    else:
        try:
            _connect(stack.pg_url, timeout=3).close()
            pg_up = True
        except StackError:
            pg_up = False
    return {"dir": stack.dir, "mlflow": mlflow_up, "mlflow_pid": stack.mlflow_pid, "tracking_uri": stack.tracking_uri,
            "postgres": pg_up, "postgres_url": redact(stack.pg_url), "managed_postgres": stack.managed_pg,
            "optuna_storage": redact(stack.optuna_storage), "basic_auth": stack.basic_auth}


def exports(stack: Stack) -> str:
    """Shell lines a client evaluates: ``eval "$(emoexp stack up --dir DIR)"``."""
    import shlex

    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in stack.env().items())


# ---------------------------------------------------------------------------------------------
# a tracking server's refusals, as one line


def tracking_error_line(e: BaseException) -> str | None:
    """One clear line for an MLflow client error that is about the server (a login it wants, a
    permission it refuses, an outage longer than the retries); None for any other error."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(e, MlflowException):
        return None
    import mlflow

    uri = redact(mlflow.get_tracking_uri())
    code = str(getattr(e, "error_code", "") or "")
    msg = str(e)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    if code == "UNAUTHENTICATED" or "error code 401" in msg:
        if user:
            return (f"{uri}: the tracking server refused the login of {user!r} (401): check "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        return (f"{uri}: the tracking server wants a login (basic-auth, 401): set MLFLOW_TRACKING_USERNAME "
                "and MLFLOW_TRACKING_PASSWORD")
    if code == "PERMISSION_DENIED" or "error code 403" in msg:
        return f"{uri}: {user or 'this user'} may not do that here (403): ask the server's admin for the permission"
    if "Max retries exceeded" in msg or "Connection refused" in msg:
        from emoexp import survived_outage_s

        return (f"{uri}: the tracking server did not answer (retried for {survived_outage_s():.0f} s); "
                "is it up? (`emoexp stack status --dir DIR`)")
    return None
