"""Starts real `confide serve` processes for the end-to-end checks, on SQLite and (when
CONFIDE_TEST_DATABASE_URL is set) on a fresh PostgreSQL database."""

import json
import os
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("CONFIDE_BIN", ROOT / "target" / "debug" / "confide"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backends():
    yield "sqlite"
    if os.environ.get("CONFIDE_TEST_DATABASE_URL"):
        yield "postgres"


def fresh_postgres_url():
    import psycopg

    base = os.environ["CONFIDE_TEST_DATABASE_URL"]
    name = "confide_e2e_" + uuid.uuid4().hex
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}"


class Confide:
    def __init__(self, backend, tmp):
        self.backend = backend
        self.data_dir = Path(tmp) / "data"
        self.database_url = (
            fresh_postgres_url()
            if backend == "postgres"
            else f"sqlite://{self.data_dir}/confide.db?mode=rwc"
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = None

    def cli(self, *args, stdin=None):
        return subprocess.run(
            [str(BINARY), "--data-dir", str(self.data_dir), "--database-url", self.database_url, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, **extra_env):
        env = {**os.environ, "CONFIDE_LOG": "info", **extra_env}
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(BINARY), "--data-dir", str(self.data_dir), "--database-url", self.database_url,
             "serve", "--listen", f"127.0.0.1:{self.port}"],
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.log_path.read_text())
            try:
                if requests.get(self.base + "/readyz", timeout=1, verify=False).status_code == 200:
                    return self
            except requests.ConnectionError:
                # Over TLS the plain-HTTP probe fails; a TLS handshake answer means it is up.
                if extra_env.get("CONFIDE_TLS_CERT"):
                    try:
                        if requests.get(self.base.replace("http://", "https://") + "/readyz", timeout=1,
                                        verify=False).status_code == 200:
                            return self
                    except requests.ConnectionError:
                        pass
                pass
            time.sleep(0.05)
        raise RuntimeError("confide did not become ready")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        if self.process:
            self.log_file.close()

    def log(self):
        return self.log_path.read_text()

    def create_owner(self, email, org, password):
        result = self.cli("admin", "create-owner", "--email", email, "--org", org, stdin=password + "\n")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def login(self, email, password):
        return requests.post(self.base + "/api/v1/auth/login", json={"email": email, "password": password}, timeout=30)


@pytest.fixture(params=list(backends()))
def make_confide(request):
    """Returns a function that starts a server (with extra environment) on this backend."""
    servers = []
    with tempfile.TemporaryDirectory() as tmp:

        def make(**extra_env):
            server = Confide(request.param, tmp)
            server.cli("migrate")
            server.start(**extra_env)
            servers.append(server)
            return server

        try:
            yield make
        finally:
            for server in servers:
                server.stop()


@pytest.fixture
def confide(make_confide):
    return make_confide()


def pytest_report_header(config):
    if not os.environ.get("CONFIDE_TEST_DATABASE_URL"):
        return "postgres: skipped (CONFIDE_TEST_DATABASE_URL not set)"
    return "postgres: enabled"
