"""Shared fixtures: an isolated ZOO_HOME per test, tiny HF checkpoints, both databases.

Every database-backed test that takes ``registry`` runs on SQLite and on PostgreSQL. The
PostgreSQL server comes from ``ZOO_TEST_DATABASE_URL`` (``.ci/run`` sets it); each test
gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tinymodels import save_tiny

PG_URL = os.environ.get("ZOO_TEST_DATABASE_URL")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Point zoo's and Hugging Face's homes at temporary folders; never go online."""
    home = tmp_path_factory.mktemp("zoo-home")
    monkeypatch.setenv("ZOO_HOME", str(home))
    for var in ("ZOO_DB_URL", "ZOO_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    # Tests compare with CPU references; the CUDA tests name their device.
    monkeypatch.setenv("ZOO_DEVICE", "cpu")
    hf = tmp_path_factory.mktemp("hf-home")
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Each test plans a derivation's groups as a new process does: a test that changes how
    # groups are planned must not meet groups an earlier test planned.
    derivation = sys.modules.get("zoo.api.derivation")
    if derivation is not None:
        monkeypatch.setattr(derivation, "_LAYOUTS", derivation._Recent(32))
    yield home


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A function ``(family, seed=0, sharded=False) -> folder`` of cached tiny checkpoints."""
    root = tmp_path_factory.mktemp("tiny")
    made: dict[tuple, Path] = {}

    def get(family: str, seed: int = 0, sharded: bool = False) -> Path:
        key = (family, seed, sharded)
        if key not in made:
            folder = root / f"{family}-s{seed}{'-sharded' if sharded else ''}"
            save_tiny(family, folder, seed=seed, max_shard_size="20KB" if sharded else None)
            made[key] = folder
        return made[key]

    return get


def _pg_database():
    """Create a fresh PostgreSQL database; returns (url, dropper)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"zoo_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A database URL for an empty database, on each back end."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'zoo.db'}"
        return
    if not PG_URL:
        if os.environ.get("ZOO_REQUIRE_SERVICES"):
            pytest.fail("ZOO_TEST_DATABASE_URL must be set when ZOO_REQUIRE_SERVICES is")
        pytest.skip("ZOO_TEST_DATABASE_URL is not set (.ci/run sets it)")
    url, drop = _pg_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def registry(db_url, tmp_path, monkeypatch):
    """A fresh registry on each back end, with ZOO_DB_URL set for CLI calls too."""
    import zoo

    monkeypatch.setenv("ZOO_DB_URL", db_url)
    monkeypatch.setenv("ZOO_STORE_URL", str(tmp_path / "blobs"))
    reg = zoo.connect()
    yield reg
    reg.close()


@pytest.fixture
def run_cli():
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from click.testing import CliRunner
    from zoo_cli.main import main

    def run(*args: str):
        runner = CliRunner()
        result = runner.invoke(_as_command(main), list(args), catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run


def _as_command(main):
    import click

    @click.command(
        context_settings={
            "ignore_unknown_options": True,
            "allow_extra_args": True,
            "help_option_names": [],
        }
    )
    @click.pass_context
    def wrapper(ctx):
        main(list(ctx.args))

    return wrapper


# --- a real S3-compatible server (moto's server mode) for the s3 tests ------------------


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible HTTP server on a free 127.0.0.1 port; yields its endpoint."""
    import logging
    import socket

    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_store_url(s3_server, monkeypatch):
    """``s3://BUCKET/zoo`` in a fresh bucket on the test server; env set for zoo and boto."""
    import boto3

    env = {
        "ZOO_S3_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "zoo-test-key",
        "AWS_SECRET_ACCESS_KEY": "zoo-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    bucket = f"zoo-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/zoo"
