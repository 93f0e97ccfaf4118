"""Real engines for the tests, started on loopback in temporary folders: a PostgreSQL server (the
distribution's binaries: initdb + postgres, run as the ``postgres`` user when the tests run as root,
as initdb refuses root) and an nginx load balancer with a generated configuration. Each stops with
its context (or ``stop``) and leaves nothing behind."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port

__all__ = ["Nginx", "PostgresServer", "find_postgres_bin"]

ROOT = Path(__file__).resolve().parents[1]


def find_postgres_bin() -> Path:
    """The folder of ``initdb`` and ``postgres``: on the PATH or under /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not candidates:
        raise RuntimeError(
            "PostgreSQL's initdb was not found (PATH, /usr/lib/postgresql/*/bin): "
            "apt-get install postgresql (.ci/run does)"
        )
    return Path(candidates[0]).parent


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1; ``database()`` makes a fresh database and returns
    its URL. Without a ``password`` every loopback connection is trusted (tests only); with one, TCP
    connections need it (scram-sha-256), as in the official image, whose entrypoint makes the
    superuser ``user`` with that password."""

    def __init__(self, user: str = "postgres", password: str | None = None) -> None:
        self.user, self.password = user, password
        self.bin = find_postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="blackvip-pg-"))
        self.port = free_port()
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._names = itertools.count()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PostgresServer:
        data = self.dir / "data"
        auth = ["--auth=trust"]
        if self.password is not None:
            secret = self.dir / "pwfile"
            secret.write_text(self.password + "\n")
            if self._user is not None:
                shutil.chown(secret, self._user)
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={secret}"]
        self._run(
            [str(self.bin / "initdb"), "-D", str(data), "-U", self.user, *auth, "-E", "UTF8", "--no-sync"]
        )
        log = (self.dir / "postgres.log").open("wb")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "max_connections": "200",
        }
        flags = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(data), *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self._user,
        )
        self._wait_ready()
        return self

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` (the password, if any, is left to PGPASSWORD)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def database(self, prefix: str = "t", name: str | None = None, encoding: str | None = None) -> str:
        """A new, empty database's URL (``encoding``: e.g. SQL_ASCII, as initdb in a C locale makes)."""
        import psycopg

        name = name or f"{prefix}_{os.getpid()}_{next(self._names)}"
        options = f" ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" if encoding else ""
        with psycopg.connect(self.url, autocommit=True, password=self.password) as admin:
            admin.execute(f'CREATE DATABASE "{name}"{options}')
        return self.database_url(name)

    def log(self) -> str:
        return (self.dir / "postgres.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, then stop
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, user=self._user)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr[-2000:]}")

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.process.returncode}):\n{self.log()[-2000:]}")
            try:
                psycopg.connect(self.url, connect_timeout=2, password=self.password).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    message = f"postgres never accepted connections:\n{self.log()[-2000:]}"
                    raise RuntimeError(message) from None
                time.sleep(0.1)


class Nginx:
    """nginx on 127.0.0.1 running ``docker/nginx/blackvip.conf`` (the compose file's load balancer)
    with its upstream pointed at ``backends`` and its listening port at a free one."""

    CONF = ROOT / "docker" / "nginx" / "blackvip.conf"

    def __init__(self, backends: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="blackvip-nginx-"))
        os.chmod(self.dir, 0o711)  # nginx's workers (nobody, under root) reach their temp folder through it
        self.port = free_port()
        site = self.CONF.read_text()
        assert "server server:8000" in site and "listen 8000" in site  # what is replaced below
        lines = []
        for line in site.splitlines():  # the one upstream line becomes one line per backend, same options
            if line.strip().startswith("server server:8000"):
                lines += [line.replace("server:8000", backend) for backend in backends]
            else:
                lines.append(line)
        site = "\n".join(lines)
        site = site.replace("listen 8000", f"listen 127.0.0.1:{self.port}")
        (self.dir / "blackvip.conf").write_text(site)
        temp = self.dir / "temp"
        temp.mkdir()
        os.chmod(temp, 0o777)  # the workers (nobody, under root) write request bodies here
        (self.dir / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 2;\npid {self.dir}/nginx.pid;\nerror_log {self.dir}/error.log;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n  access_log {self.dir}/access.log;\n  client_body_temp_path {temp}/body;\n"
            f"  proxy_temp_path {temp}/proxy;\n  fastcgi_temp_path {temp}/fastcgi;\n"
            f"  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n"
            f"  include {self.dir}/blackvip.conf;\n}}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check(self) -> None:
        """``nginx -t``: the configuration parses and every directive is known."""
        result = subprocess.run(
            [self._binary(), "-t", "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {result.stderr}")

    def start(self) -> Nginx:
        self.check()
        log = (self.dir / "nginx.out").open("wb")
        self.process = subprocess.Popen(
            [self._binary(), "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/nginx-health", timeout=1)
                return self
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {self.error_log()}") from None
                time.sleep(0.1)

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish the requests being proxied
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _binary() -> str:
        found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if found is None:
            raise RuntimeError("nginx was not found: apt-get install nginx (.ci/run does)")
        return found
