"""``zoo serve`` over the organization-wide back end: PostgreSQL and an S3-compatible store
(moto's server), reached by a client that holds only a token."""

from __future__ import annotations

import os

import pytest
from zooserver import ZooServer, client, registry_for, server_env

pytest.importorskip("fastapi")
pytestmark = [pytest.mark.postgres, pytest.mark.s3]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite: the other modules
def test_a_server_over_postgres_and_s3_imports_serves_and_derives(
    db_url, s3_store_url, tmp_path, tiny_dir, run_cli, monkeypatch
):
    env = server_env(tmp_path / "home", db_url, s3_store_url)
    (tmp_path / "home").mkdir()
    env.update({k: v for k, v in os.environ.items() if k.startswith(("AWS_", "ZOO_S3"))})
    reg = registry_for(env)
    token = reg.create_token("alice", role="write")[1]
    server = ZooServer(env, log=tmp_path / "server.log").start()
    try:
        monkeypatch.setenv("ZOO_ENDPOINT", server.url)
        monkeypatch.setenv("ZOO_TOKEN", token)
        for var in ("ZOO_DB_URL", "ZOO_STORE_URL"):
            monkeypatch.delenv(var, raising=False)
        code, out, err = run_cli("import", str(tiny_dir("llama")), "--name", "tiny-llama")
        assert out.startswith("tiny-llama  source")
        assert code == 0, err
        assert reg.show("tiny-llama").created_by == "alice"
        with client(server.url, token) as http:
            config = http.get("/tiny-llama/resolve/2x16/config.json").json()
            assert (config["num_hidden_layers"], config["hidden_size"]) == (2, 16)
            weights = http.get("/tiny-llama/resolve/main/model.safetensors")
            assert weights.status_code == 200
        assert [i.hidden for i in reg.list(kind="derived")] == [16]
        # An alias's history through the server, three settings a page.
        derived = reg.list(kind="derived")[0].name
        tagged = [("tiny-llama", derived)[i % 2] for i in range(7)]
        for name in tagged:
            assert run_cli("tag", name, "prod")[0] == 0
        pages, after = [], None
        with client(server.url, token) as http:
            while True:
                params = {"limit": 3, **({"after": after} if after else {})}
                body = http.get("/api/aliases/prod", params=params).json()
                pages.append([s["artifact_name"] for s in body["history"]])
                assert len(pages) <= 3, pages
                if body["next"] is None:
                    break
                after = body["next"]
        assert pages == [tagged[::-1][0:3], tagged[::-1][3:6], tagged[::-1][6:7]]
        assert reg.fsck(grace=0).ok
    finally:
        server.stop()
        reg.close()
