"""``zoo serve`` under hostile or broken clients, against a real server process: missing,
revoked and under-privileged tokens, path tricks, oversized and forged uploads, and SIGKILL
mid-upload and mid-materialize. Each time: a clear 4xx, nothing half-written, the server
keeps serving, and ``zoo fsck`` finds nothing."""

from __future__ import annotations

import http.client
import json
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from zooserver import ZooServer, client, registry_for, server_env

pytest.importorskip("fastapi")

# The cache folder's own files: its mark and the code that built what it holds.
CACHE_MARKS = [".zoo-serve-cache", ".zoo-serve-writer"]

LIMIT = 2_000_000  # bytes; the tiny checkpoints are far below it


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_dir):
    home = tmp_path_factory.mktemp("secure")
    env = server_env(home)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    tokens = {r: reg.create_token(f"t-{r}", role=r)[1] for r in ("read", "write", "admin")}
    _, revoked = reg.create_token("gone", role="admin")
    reg.revoke_token("gone")
    log = home / "server.log"
    server = ZooServer(env, "--max-upload", str(LIMIT), log=log).start()
    try:
        yield SimpleNamespace(
            server=server, env=env, reg=reg, tokens=tokens, revoked=revoked, home=home, log=log
        )
    finally:
        server.stop()
        reg.close()


def _state(reg):
    """Everything a write could change: artifacts, aliases, edges, tokens, blobs."""
    infos = reg.list(include_deleted=True)
    edges = sorted((e.parent_id, e.child_id, e.relation) for e in reg.lineage("tiny-bert").edges)
    blobs = sorted(reg.store.digests())
    tokens = [(t.name, t.role, t.revoked_at) for t in reg.list_tokens(include_revoked=True)]
    return [(i.name, i.aliases, i.deleted, i.virtual) for i in infos], edges, blobs, tokens


WRITES = (
    ("POST", "/api/extract", {"json": {"source": "tiny-bert"}}),
    ("POST", "/api/materialize", {"json": {"name": "tiny-bert", "layers": 2, "hidden": 16}}),
    ("POST", "/api/artifacts/tiny-bert/aliases", {"json": {"alias": "stolen"}}),
    ("POST", "/api/artifacts/tiny-bert/links", {"json": {"parent": "tiny-bert"}}),
    ("DELETE", "/api/artifacts/tiny-bert", {}),
    ("POST", "/api/import", {"json": {"repo": "org/model"}}),
    ("POST", "/api/tokens", {"json": {"name": "mine", "role": "admin"}}),
    ("POST", "/api/gc", {"json": {"grace": "0s"}}),
)


def test_no_token_a_revoked_token_and_a_read_token_write_nothing(served):
    before = _state(served.reg)
    url = served.server.url
    for method, path, kw in WRITES:
        for token, status in ((None, 401), (served.revoked, 401), (served.tokens["read"], 403)):
            with client(url, token) as http:
                answer = http.request(method, path, **kw)
            assert answer.status_code == status, (method, path, token, answer.text)
            cls = "AuthenticationError" if status == 401 else "PermissionDeniedError"
            assert answer.json()["error"]["class"] == cls
            if status == 401:
                assert answer.headers["www-authenticate"].startswith("Bearer")
    # Reads need a token too (no --public-read here), and a garbled header is refused.
    assert httpx.get(f"{url}/api/artifacts").status_code == 401
    assert httpx.get(f"{url}/tiny-bert/resolve/main/config.json").status_code == 401
    garbled = httpx.get(f"{url}/api/artifacts", headers={"Authorization": "Basic eDp5"})
    assert garbled.status_code == 401
    with client(url, served.tokens["write"]) as http:  # write is not admin
        assert http.post("/api/tokens", json={"name": "x"}).status_code == 403
    assert _state(served.reg) == before


def test_a_caller_without_a_token_is_told_the_role_the_route_needs(served):
    """Refused before its body is read, a request without a token is told to ask for the
    role its route needs: the one the route itself names to a read token."""
    import re

    routes = (
        *WRITES,
        ("PUT", "/api/defaults/bert", {"json": {"learngene": "tiny-bert"}}),
        ("POST", "/api/fsck", {"json": {}}),
        ("POST", "/api/verify", {}),
        ("DELETE", "/api/tokens/t-read", {}),
    )
    for method, path, kw in routes:
        with client(served.server.url, served.tokens["read"]) as http:
            denied = http.request(method, path, **kw)
        assert denied.status_code == 403, (path, denied.text)
        needs = re.search(r"needs (\w+)\.$", denied.json()["error"]["message"])[1]
        with client(served.server.url) as anyone:
            answer = anyone.request(method, path, **kw)
        assert answer.status_code == 401, (path, answer.text)
        assert f"--role {needs}," in answer.json()["error"]["message"], (path, answer.text)


def test_two_authorization_headers_are_refused_whichever_comes_first(served):
    """A proxy in front of the server may read the last of two headers where the server
    would read the first: a request carrying two is refused, even when both are valid."""
    read, admin = served.tokens["read"], served.tokens["admin"]
    for first, second in ((read, admin), (admin, read), (admin, admin)):
        headers = [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]
        answer = httpx.get(f"{served.server.url}/api/artifacts", headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["class"] == "AuthenticationError"
        assert "2 Authorization headers" in answer.json()["error"]["message"]
    with client(served.server.url, admin) as http:  # one header still works
        assert http.get("/api/artifacts").status_code == 200


def test_the_servers_log_has_a_line_per_request_naming_who_and_never_a_secret(served):
    """An operator reads who asked for what, with what answer, from the server's own log:
    the token's name, never its secret, and the path without its query, where a download
    link carries its signature."""
    import re

    url = served.server.url
    with client(url, served.tokens["read"]) as http:
        assert http.get("/api/artifacts", params={"q": "tiny-b"}).status_code == 200
        link = http.get("/api/artifacts/tiny-bert/files/config.json/link")
    with httpx.Client(base_url=url) as anyone:
        assert anyone.get(link.json()["url"]).status_code == 200
        assert anyone.get("/api/tokens").status_code == 401
        assert anyone.head("/api/health").status_code == 200  # a load balancer's probe
    deadline = time.monotonic() + 10
    while '"HEAD /api/health"' not in served.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = served.log.read_text()
    line = r"INFO zoo\.server\.access: 127\.0\.0\.1 {} \"{}\" {} \d+ \d+ ms$"
    for who, request, status in (
        ("t-read", "GET /api/artifacts", 200),
        ("t-read", "GET /api/artifacts/tiny-bert/files/config.json", 200),
        ("-", "GET /api/tokens", 401),
        ("-", "HEAD /api/health", 200),
    ):
        assert re.search(line.format(who, re.escape(request), status), text, re.M), request
    assert "signature" not in text and "tiny-b" not in text.replace("tiny-bert", "")
    for secret in (*served.tokens.values(), served.revoked):
        assert secret not in text


def test_the_servers_start_and_stop_lines_carry_their_time(tmp_path):
    """An operator reads from the log when the server started and stopped (a restart, a
    crash loop), as every request's line says when it came: uvicorn's own lines printed
    "INFO:     Started server process [4793]" with no time."""
    import re

    env = server_env(tmp_path)
    log = tmp_path / "server.log"
    ZooServer(env, log=log).start().stop()
    timed = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 INFO [\w.]+: "
    text = log.read_text()
    for said in (
        "zoo serving on http://127.0.0.1:",
        "Started server process [",
        "Application startup complete.",
        "Shutting down",
        "Finished server process [",
    ):
        line = next((x for x in text.splitlines() if said in x), None)
        assert line is not None and re.match(timed, line), (said, text)


def test_a_download_link_opens_its_one_file_without_a_header_while_its_token_is_active(served):
    """The web page follows a signed link so the browser saves a file as it arrives. The
    link reads that file only: not another file, not with its expiry or signature
    altered, and not once its token is revoked."""
    from datetime import datetime, timezone

    from zoo.server.links import LINK_TTL_S

    url = served.server.url
    _, secret = served.reg.create_token("linker", role="read")
    try:
        with client(url, secret) as http:
            made = http.get("/api/artifacts/tiny-bert/files/config.json/link")
            answer = http.get("/api/artifacts/tiny-bert/files/config.json")
            whole = answer.content
            hub = http.get("/tiny-bert/resolve/main/config.json")
            missing = http.get("/api/artifacts/tiny-bert/files/nothing.bin/link")
        assert made.status_code == 200, made.text
        assert missing.status_code == 404
        link = made.json()["url"]
        path, _, query = link.partition("?")
        assert path == "/api/artifacts/tiny-bert/files/config.json"
        left = datetime.fromisoformat(made.json()["expires_at"]) - datetime.now(timezone.utc)
        assert 0 < left.total_seconds() <= LINK_TTL_S
        with httpx.Client(base_url=url) as anyone:  # no Authorization header
            got = anyone.get(link)
            assert got.status_code == 200 and got.content == whole
            # Answers to a token or a link are the caller's: no shared cache may keep them.
            for private in (answer, hub, got):
                assert private.headers["cache-control"].startswith("private,"), private.headers
            assert anyone.head(link).status_code == 200
            params = dict(p.split("=") for p in query.split("&"))
            other = anyone.get(f"/api/artifacts/tiny-bert/files/model.safetensors?{query}")
            later = {**params, "expires": str(int(params["expires"]) + 3600)}
            forged = {**params, "signature": "0" * 64}
            odd = {**params, "signature": "\u00e9"}
            for answer in (
                other,
                anyone.get(path, params=later),
                anyone.get(path, params=forged),
                anyone.get(path, params=odd),
            ):
                assert answer.status_code == 401, answer.text
                assert "download link is not valid" in answer.json()["error"]["message"]
            partial = anyone.get(path, params={"signature": params["signature"]})
            assert partial.status_code == 400
            # The link opens a file, not the other reads.
            assert anyone.get(f"/api/artifacts/tiny-bert?{query}").status_code == 400
            served.reg.revoke_token("linker")
            revoked = anyone.get(link)
            assert revoked.status_code == 401
            assert "revoked" in revoked.json()["error"]["message"]
    finally:
        if served.reg.check_token(secret) is not None:
            served.reg.revoke_token("linker")


def test_a_checkpoints_files_never_run_as_a_page_in_the_servers_origin(served, tiny_dir, tmp_path):
    """A license or a module folder's file is whatever its importer wrote: an HTML or SVG
    one opened from the server (a link anyone can send) would run in the web page's
    origin, beside the token the page keeps. Each file is served as JSON, plain text or
    bytes, never sniffed, and sandboxed; its bytes unchanged."""
    import mimetypes
    import shutil

    folder = tmp_path / "hostile-files"
    shutil.copytree(tiny_dir("bert", seed=7), folder)  # not tiny-bert's weights
    script = "<script>document.title = localStorage.getItem('zoo-token')</script>"
    (folder / "LICENSE.html").write_text(script)
    (folder / "NOTICE.svg").write_text(f'<svg xmlns="http://www.w3.org/2000/svg">{script}</svg>')
    modules = [{"idx": 0, "name": "0", "path": "", "type": "t"}, {"idx": 1, "path": "1_P"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_P").mkdir()
    (folder / "1_P" / "x.html").write_text(script)
    served.reg.import_checkpoint(folder, name="hostile-files")
    kinds = {
        "LICENSE.html": "application/octet-stream",
        "NOTICE.svg": "application/octet-stream",
        "1_P/x.html": "application/octet-stream",
        "config.json": "application/json",
        "README.md": "text/plain; charset=utf-8",
    }
    with client(served.server.url, served.tokens["read"]) as http:
        for name, kind in kinds.items():
            # What a browser would take these files for, by their names alone.
            if name.endswith((".html", ".svg")):
                assert mimetypes.guess_type(name)[0] in ("text/html", "image/svg+xml")
            quoted = name.replace("/", "%2F")
            for path in (
                f"/api/artifacts/hostile-files/files/{quoted}",
                f"/hostile-files/resolve/main/{name}",
            ):
                got = http.get(path)
                assert got.status_code == 200, (path, got.text)
                assert got.headers["content-type"] == kind, (path, got.headers)
                assert got.headers["x-content-type-options"] == "nosniff"
                assert "sandbox" in got.headers["content-security-policy"]
                if name in ("LICENSE.html", "1_P/x.html"):
                    assert got.text == script
    served.reg.rm("hostile-files")


def test_a_method_a_path_does_not_take_is_refused_naming_those_it_does(served):
    """405 with its Allow header, which RFC 9110 (15.5.6) requires of it, in zoo's body."""
    with client(served.server.url, served.tokens["read"]) as http:
        for method, path, allowed in (
            ("PUT", "/api/health", {"GET", "HEAD"}),
            ("OPTIONS", "/api/artifacts", {"GET"}),
            ("PATCH", "/api/tokens", {"GET", "POST"}),
        ):
            answer = http.request(method, path)
            assert answer.status_code == 405, (method, path, answer.text)
            assert set(answer.headers["allow"].replace(" ", "").split(",")) == allowed
            assert answer.json()["error"]["status"] == 405


def test_a_download_link_expires_and_no_other_server_process_takes_it():
    from zoo.errors import AuthenticationError
    from zoo.server.links import DownloadLinks

    links = DownloadLinks(ttl_s=60)
    link = links.sign("tiny-bert", "config.json", 7, now=1000.0)
    assert link.expires == 1060
    links.check("tiny-bert", "config.json", 7, 1060, link.signature, now=1060.0)
    with pytest.raises(AuthenticationError, match="expired"):
        links.check("tiny-bert", "config.json", 7, 1060, link.signature, now=1061.0)
    for name, filename, token in (("other", "config.json", 7), ("tiny-bert", "config.json", 8)):
        with pytest.raises(AuthenticationError, match="not valid"):
            links.check(name, filename, token, 1060, link.signature, now=1000.0)
    with pytest.raises(AuthenticationError, match="not valid"):  # a restarted server
        DownloadLinks(ttl_s=60).check(
            "tiny-bert", "config.json", 7, 1060, link.signature, now=1000.0
        )
    key = b"k" * 32  # servers given one key take each other's links, and only those
    shared = DownloadLinks(ttl_s=60, key=key).sign("tiny-bert", "config.json", 7, now=1000.0)
    DownloadLinks(ttl_s=60, key=key).check(
        "tiny-bert", "config.json", 7, 1060, shared.signature, now=1000.0
    )
    with pytest.raises(AuthenticationError, match="not valid"):
        DownloadLinks(ttl_s=60, key=b"j" * 32).check(
            "tiny-bert", "config.json", 7, 1060, shared.signature, now=1000.0
        )


def test_servers_given_one_link_key_file_take_each_others_links_and_no_other_does(served):
    """Two servers behind one load balancer: the page asks one for a link and its download
    may reach the other. Given the same key file, either opens the other's link (and one
    restarted keeps taking them); a server with a key of its own refuses them."""
    import secrets

    key = served.home / "link.key"
    key.write_text(secrets.token_hex(32) + "\n")
    home = served.home
    first, second, alone = (
        ZooServer(served.env, *args, log=home / f"replica-{i}.log")
        for i, args in enumerate((("--link-key-file", str(key)),) * 2 + ((),))
    )
    try:
        for server in (first, second, alone):
            server.start()
        with client(first.url, served.tokens["read"]) as http:
            whole = http.get("/api/artifacts/tiny-bert/files/config.json").content
            link = http.get("/api/artifacts/tiny-bert/files/config.json/link").json()["url"]
        with httpx.Client() as anyone:
            got = anyone.get(second.url + link)
            assert got.status_code == 200, got.text
            assert got.content == whole
            refused = anyone.get(alone.url + link)
            assert refused.status_code == 401
            assert "--link-key-file" in refused.json()["error"]["message"]
            first.stop()
            first.start()
            assert anyone.get(first.url + link).content == whole
    finally:
        for server in (first, second, alone):
            server.stop()


@pytest.mark.parametrize(
    ("content", "said"),
    [(None, "cannot be read"), ("short\n", "holds 5 bytes; a signing key needs at least 32")],
)
def test_a_link_key_file_that_cannot_sign_is_refused_before_the_server_starts(
    tmp_path, content, said
):
    import subprocess
    import sys

    key = tmp_path / "link.key"
    if content is not None:
        key.write_text(content)
    env = server_env(tmp_path)
    cmd = [sys.executable, "-m", "zoo_cli.main", "serve", "--port", "0"]
    done = subprocess.run(
        [*cmd, "--link-key-file", str(key)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"zoo: error: --link-key-file {key}")
    assert said in line
    assert not (tmp_path / "serve-cache").exists()


@pytest.mark.parametrize(
    ("path", "token"), [("/api/materialize", None), ("/api/import/upload", "revoked")]
)
def test_a_body_without_a_valid_token_is_refused_before_it_is_read(served, path, token):
    """The token is checked before the body is read: a caller without one cannot make the
    server take in (and hold) a body up to the upload limit. The answer comes while the
    body has barely begun."""
    import socket

    secret = served.revoked if token == "revoked" else None
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {LIMIT - 1}\r\n"
        + (f"Authorization: Bearer {secret}\r\n" if secret else "")
        + "\r\n"
    )
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=20) as sock:
        sock.sendall(head.encode() + b" " * 1000)
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection after it
            answer += chunk
        answer = answer.decode("latin-1")
    assert answer.startswith("HTTP/1.1 401"), answer[:200]
    assert "AuthenticationError" in answer


def _raw(server, method: str, path: str, headers=None) -> int:
    """Send the path byte for byte (httpx would normalize '..' away)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_path_tricks_get_a_clear_4xx(served):
    auth = {"Authorization": f"Bearer {served.tokens['admin']}"}
    tricks = [
        "/tiny-bert/resolve/main/../../zoo.db",
        "/tiny-bert/resolve/main/%2e%2e/%2e%2e/zoo.db",
        "/tiny-bert/resolve/main/..%2F..%2Fzoo.db",
        "/tiny-bert/resolve/main/config.json%00.txt",
        "/tiny-bert/resolve/..%2F..%2F/config.json",
        "/tiny-bert/resolve/main%00/config.json",
        "/..%2F..%2Fetc/resolve/main/passwd",
        "/tiny-bert%00/resolve/main/config.json",
        "/tiny-bert/resolve/main/blobs/" + "a" * 64,
        "/api/artifacts/..%2F..%2Fzoo.db",
        "/api/artifacts/tiny-bert%00",
        "/api/artifacts/" + "x" * 5000,
        "/api/artifacts/tiny-bert/files/..%2Fzoo.db",
        "/api/artifacts/tiny-bert/lineage?format=../../x",
        "/tiny-bert/resolve/" + "9" * 4000 + "x1/config.json",
        "/tiny-bert/resolve/main/" + "c" * 20000,
    ]
    for path in tricks:
        status = _raw(served.server, "GET", path, auth)
        assert 400 <= status < 500, (path[:80], status)
    assert served.server.alive()
    # The real file is still served, and the database the tricks aimed at is untouched.
    with client(served.server.url, served.tokens["read"]) as http:
        assert http.get("/tiny-bert/resolve/main/config.json").status_code == 200
    assert served.reg.show("tiny-bert").name == "tiny-bert"


def _folder_parts(folder):
    return [
        ("files", (f.name, f.read_bytes(), "application/octet-stream"))
        for f in sorted(folder.iterdir())
        if f.name in ("config.json", "model.safetensors")
    ]


def _files(root):
    """Every file under the server's home but its database and log."""
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(("zoo.db", "server.log"))
    }


def test_oversized_and_forged_uploads_are_refused_and_leave_nothing(served, tiny_dir, tmp_path):
    before = _state(served.reg)
    files_before = _files(served.home)
    cache = served.home / "serve-cache"
    with client(served.server.url, served.tokens["write"]) as http:
        # Oversized, announced by Content-Length: refused before the body is read.
        big = [("files", ("model.safetensors", b"\0" * (LIMIT + 1)))]
        answer = http.post("/api/import/upload", files=big, data={"folder": "big"})
        assert answer.status_code == 413
        assert answer.json()["error"]["class"] == "PayloadTooLargeError"

        # Oversized without a length (chunked): refused once the limit is passed.
        def chunks():
            yield (
                b'--xyz\r\nContent-Disposition: form-data; name="files"; '
                b'filename="model.safetensors"\r\nContent-Type: application/octet-stream\r\n\r\n'
            )
            for _ in range(LIMIT // 65536 + 4):
                yield b"\0" * 65536

        chunked = http.post(
            "/api/audit",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert chunked.status_code == 413

        # Forged safetensors: a header that claims more bytes than the file holds.
        forged = tmp_path / "forged"
        forged.mkdir()
        real = tiny_dir("bert")
        (forged / "config.json").write_bytes((real / "config.json").read_bytes())
        header = json.dumps(
            {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}
        ).encode()
        (forged / "model.safetensors").write_bytes(
            len(header).to_bytes(8, "little") + header + b"\0" * 64
        )
        answer = http.post(
            "/api/import/upload", files=_folder_parts(forged), data={"folder": "forged"}
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["class"] == "InvalidCheckpointError"
        # Garbage that is not safetensors at all, and a truncated real file.
        (forged / "model.safetensors").write_bytes(b"\xff" * 100)
        answer = http.post(
            "/api/import/upload", files=_folder_parts(forged), data={"folder": "forged"}
        )
        assert answer.status_code == 422
        (forged / "model.safetensors").write_bytes(
            (real / "model.safetensors").read_bytes()[:-1000]
        )
        answer = http.post("/api/audit", files=_folder_parts(forged))
        assert answer.status_code == 422

        # Names that leave the folder, are hidden, too deep, or not checkpoint files at its
        # top (a module folder's file, 1_Pooling/config.json or 2_Dense/pytorch_model.bin,
        # is a path of plain names below it, of any kind: an import keeps them all).
        for bad in (
            "../evil.safetensors",
            "/abs/x.json",
            "a//b.json",
            "a/../b.json",
            "sub/.hidden.json",
            "a/b/c/d/e.json",
            "x\\y.json",
            ".hidden.json",
            "run.sh",
        ):
            parts = [("files", (bad, b"{}", "application/json"))]
            answer = http.post("/api/import/upload", files=parts, data={"folder": "x"})
            assert answer.status_code == 400, bad
        answer = http.post(
            "/api/import/upload",
            files=_folder_parts(real),
            data={"folder": "../../outside"},
        )
        assert answer.status_code == 400
    assert _files(served.home) == files_before
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == CACHE_MARKS
    assert _state(served.reg) == before
    assert served.server.alive()
    report = served.reg.fsck(grace=0)
    assert report.ok and report.temp_files == () and report.orphans == ()


def test_a_client_upload_over_the_limit_is_refused_in_the_servers_words(
    served, tmp_path, run_cli, monkeypatch
):
    """The server refuses an upload whose Content-Length passes --max-upload as soon as
    the headers arrive, and closes the connection: a client still sending the body sees a
    broken pipe or a reset (which may discard the answer). A client's `zoo import` asks
    first, and says what the upload itself is answered, exit 2, every time; likewise a
    token that may not import, exit 12; nothing is sent, nothing recorded."""
    import socket

    from tinymodels import save_tiny

    # A vocabulary as large as XLM-R's: 32 MB, far more than the sockets' buffers hold.
    folder = save_tiny("bert", tmp_path / "large", vocab_size=250_000)
    assert (folder / "model.safetensors").stat().st_size > 15 * LIMIT
    # The upload's own answer, to its headers alone (no body to be cut off while sent).
    head = (
        f"POST /api/import/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT + 1}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Authorization: Bearer {served.tokens['write']}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=20) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection after it
            answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413"), answer[:200]
    said = json.loads(body)["error"]["message"]
    with client(served.server.url, served.tokens["write"]) as http:
        # The check is the upload's own: exactly the limit is taken, a byte more is not.
        for size, code in ((LIMIT, 200), (LIMIT + 1, 413)):
            checked = http.get("/api/import/upload/check", params={"size": size})
            assert checked.status_code == code, checked.text
        assert checked.json() == json.loads(body)
    before = _state(served.reg)
    monkeypatch.setenv("ZOO_ENDPOINT", served.server.url)
    monkeypatch.setenv("ZOO_TOKEN", served.tokens["write"])
    for _ in range(3):
        assert run_cli("import", str(folder)) == (2, "", f"zoo: error: {said}\n")
    monkeypatch.setenv("ZOO_TOKEN", served.tokens["read"])
    code, out, err = run_cli("import", str(folder))
    assert (code, out) == (12, "") and "has role read; this request needs write" in err, err
    assert _state(served.reg) == before


def test_sigkill_mid_upload_and_mid_materialize_leaves_nothing_fsck_reports(
    served, tiny_dir, tmp_path
):
    server = served.server
    cache = served.home / "serve-cache"
    folder = tiny_dir("bert", seed=3)
    parts = _folder_parts(folder)
    # Mid-upload: the body trickles in; the server dies with part of it received.
    request = httpx.Request(
        "POST",
        f"{server.url}/api/import/upload",
        files=parts,
        data={"folder": "halfway"},
        headers={"Authorization": f"Bearer {served.tokens['write']}"},
    )
    body = request.read()

    killed = threading.Event()

    def trickle():
        yield body[: len(body) // 2]
        killed.wait(30)  # the server is killed while it waits for the rest
        yield body[len(body) // 2 :]

    headers = dict(request.headers)
    headers.pop("content-length", None)
    failed = []

    def send():
        try:
            httpx.post(request.url, content=trickle(), headers=headers, timeout=60)
        except httpx.HTTPError as exc:
            failed.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(1.5)
    server.kill()
    killed.set()
    sender.join(timeout=60)
    assert failed  # the client saw the connection die, not an answer
    server.start()
    assert [i.name for i in served.reg.list()].count("halfway") == 0

    # Mid-materialize: a large size ordered through the Hub route, killed while its
    # folder is being written into the cache.
    got = []

    def order():
        try:
            got.append(
                httpx.get(
                    f"{server.url}/tiny-bert/resolve/8x512/config.json",
                    headers={"Authorization": f"Bearer {served.tokens['read']}"},
                    timeout=120,
                )
            )
        except httpx.HTTPError as exc:
            got.append(exc)

    orderer = threading.Thread(target=order, daemon=True)
    orderer.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not got:
        if any(p.name.startswith(".") and p.name not in CACHE_MARKS for p in cache.iterdir()):
            break
        time.sleep(0.002)
    assert not got, "the materialization finished before it could be interrupted"
    server.kill()
    orderer.join(timeout=60)
    assert any(p.name.startswith(".") and p.name not in CACHE_MARKS for p in cache.iterdir())
    report = served.reg.fsck(grace=0)
    assert report.ok and report.problems == ()
    assert report.temp_files == () and report.orphans == ()

    # A restart clears the half-written folder and serves the size whole.
    server.start()
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == CACHE_MARKS
    with client(server.url, served.tokens["read"]) as http:
        config = http.get("/tiny-bert/resolve/8x512/config.json").json()
    assert (config["num_hidden_layers"], config["hidden_size"]) == (8, 512)
    assert served.reg.fsck(grace=0).ok


def test_an_import_by_name_takes_a_hub_repository_never_a_folder_of_the_servers_disk(
    tmp_path, tiny_dir, run_cli, monkeypatch
):
    """`POST /api/import` names a Hub repository. A folder of the server's own disk that
    the name also spells (here t/s5 in the server's working folder, its vocab.txt linking
    to a file only the server may read) is never read: the caller is told, as a local `zoo
    import t/s5` where no such folder exists is, that the repository is not in the HF
    cache (the server's, which it names without its path), in client mode too, and the
    Hub repository itself (the server's HF cache) is what gets imported."""
    import os
    import shutil
    from pathlib import Path

    secret = tmp_path / "server-only.txt"
    secret.write_text("a file of the server's machine\n")
    server_cwd, client_cwd = tmp_path / "server-cwd", tmp_path / "client-cwd"
    client_cwd.mkdir()
    folder = server_cwd / "t" / "s5"
    shutil.copytree(tiny_dir("bert", seed=7), folder)  # not tiny-bert's weights
    (folder / "vocab.txt").unlink(missing_ok=True)
    (folder / "vocab.txt").symlink_to(secret)
    home = tmp_path / "home"
    home.mkdir()
    env = server_env(home)  # the test's HF cache, empty and offline, as the CLI's below
    reg = registry_for(env)
    writer = reg.create_token("w", role="write")[1]
    server = ZooServer(env, log=home / "server.log", cwd=server_cwd).start()
    try:
        monkeypatch.chdir(client_cwd)
        local = run_cli("import", "t/s5", "--name", "leaked")
        assert local[0] == 8 and "not in the local Hugging Face cache" in local[2], local
        with client(server.url, writer) as http:
            answer = http.post("/api/import", json={"repo": "t/s5", "name": "leaked"})
        error = answer.json()["error"]
        assert (answer.status_code, error["exit_code"]) == (503, 8), answer.text
        assert error["message"].startswith("The zoo server could not get t/s5: ")
        assert "is offline and its cache does not hold it" in error["message"]
        assert os.environ["HF_HUB_CACHE"] not in error["message"]
        monkeypatch.setenv("ZOO_ENDPOINT", server.url)
        monkeypatch.setenv("ZOO_TOKEN", writer)
        said = f"zoo: error: {error['message']}\n"
        assert run_cli("import", "t/s5", "--name", "leaked") == (8, "", said)
        assert reg.list() == []

        # The repository in the server's HF cache: imported from there, its own content.
        commit = "5" * 40
        repo = Path(os.environ["HF_HUB_CACHE"]) / "models--t--s5"
        shutil.copytree(tiny_dir("gpt2"), repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        with client(server.url, writer) as http:
            answer = http.post("/api/import", json={"repo": "t/s5"})
            assert answer.status_code == 200, answer.text
            files = http.get("/api/artifacts/s5/files").json()["files"]
            served = {f: http.get(f"/api/artifacts/s5/files/{f}").content for f in files}
        info = reg.show("s5")
        assert info.family == "gpt2" and [i.origin for i in info.imports] == ["hf://t/s5"]
        assert secret.read_bytes() not in served.values() and "vocab.txt" not in served
    finally:
        server.stop()
        reg.close()


def test_a_json_body_is_bounded_far_below_uploads_and_refused_before_it_is_parsed(tmp_path):
    """Anyone may post an audit by hashes to a --public-read server, and a JSON body is
    parsed whole in memory: past a config.json as large as zoo reads one (or some 250,000
    tensors' hashes) it is refused with 413 and zoo's error body, announced or not,
    whatever content type it claims, while uploads keep --max-upload (8GB)."""
    from zoo.checkpoint.hf import MAX_JSON_BYTES
    from zoo.server.app import JSON_BODY_LIMIT

    assert JSON_BODY_LIMIT == MAX_JSON_BYTES and JSON_BODY_LIMIT >= 250_000 * 256
    env = server_env(tmp_path)
    registry_for(env).close()
    server = ZooServer(env, "--public-read", log=tmp_path / "server.log").start()
    try:
        for kind in ("application/json", "multipart/form-data; boundary=x", "text/plain"):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            try:  # announced: answered before a byte of the body is sent
                conn.putrequest("POST", "/api/audit/hashes")
                conn.putheader("Content-Type", kind)
                conn.putheader("Content-Length", str(JSON_BODY_LIMIT + 1))
                conn.endheaders()
                answer = conn.getresponse()
                error = json.loads(answer.read())["error"]
            finally:
                conn.close()
            assert (answer.status, error["class"]) == (413, "PayloadTooLargeError"), kind
            assert f"{JSON_BODY_LIMIT} bytes" in error["message"]

        def padded():  # valid JSON, one byte too long, in chunks without a length
            head = b'{"tensors": [], "config": {}'
            yield head
            left = JSON_BODY_LIMIT - len(head)  # and "}"
            while left > 0:
                yield b" " * min(left, 1 << 20)
                left -= 1 << 20
            yield b"}"

        with client(server.url) as anyone:
            answer = anyone.post(
                "/api/audit/hashes", content=padded(), headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 413, answer.text
            assert answer.json()["error"]["class"] == "PayloadTooLargeError"
            fits = anyone.post("/api/audit/hashes", json={"tensors": [], "config": {}})
            assert fits.status_code == 200 and fits.json()["status"] == "unknown", fits.text
    finally:
        server.stop()


def test_anyone_may_ask_a_public_read_server_for_paths_info(tmp_path, tiny_dir):
    """huggingface_hub's get_paths_info posts a form; on a --public-read server it needs no
    token, as model_info does, and answers what a read token is answered."""
    env = server_env(tmp_path)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    secret = reg.create_token("reader", role="read")[1]
    reg.close()
    server = ZooServer(env, "--public-read", log=tmp_path / "server.log").start()
    try:
        form = {"paths": ["config.json", "absent.txt"]}
        with client(server.url, secret) as reader:
            expected = reader.post("/api/models/tiny-bert/paths-info/main", data=form)
        assert expected.status_code == 200 and len(expected.json()) == 1, expected.text
        with client(server.url) as anyone:
            answer = anyone.post("/api/models/tiny-bert/paths-info/main", data=form)
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected.json()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("content_type", "body", "said"),
    [
        (None, None, "none came"),
        ("application/json", b"", "none came"),
        ("application/x-www-form-urlencoded", b"alias=x", "came as application/x-www-form"),
        ("text/plain", b'{"alias": "x"}', "came as text/plain"),
        (None, b'{"alias": "x"}', "came without a Content-Type"),
        ("application/json", b'["x"]', "not an array"),
        ("application/json", b'"x"', "not a string"),
        ("application/json", b"null", "not null"),
        ("application/json", b"7", "not a number"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused_saying_what_came(
    served, content_type, body, said
):
    """A body sent as a form, as text, as JSON that is not an object, or not at all is
    refused in one line that says which, and that a JSON object is what the route takes:
    never a bare "invalid request", which names nothing a caller can change."""
    before = _state(served.reg)
    headers = {"Authorization": f"Bearer {served.tokens['write']}"}
    if content_type:
        headers["Content-Type"] = content_type
    with httpx.Client(base_url=served.server.url, timeout=60) as http:
        answer = http.post("/api/artifacts/tiny-bert/aliases", content=body, headers=headers)
    error = answer.json()["error"]
    assert (answer.status_code, error["class"], error["exit_code"]) == (
        400,
        "InvalidInputError",
        2,
    )
    assert error["message"].startswith(
        "POST /api/artifacts/tiny-bert/aliases takes a JSON object as its body"
    ), error
    assert said in error["message"], error
    assert "\n" not in error["message"]
    assert _state(served.reg) == before


@pytest.mark.parametrize(
    ("param", "what"),
    [("created_by", "author"), ("family", "family")],
)
def test_a_nul_in_a_listing_filter_is_refused_naming_the_filter(served, param, what):
    """A NUL no name can hold is refused before any statement, in a sentence that reads
    ("The author cannot hold...", never "A author")."""
    with client(served.server.url, served.tokens["read"]) as http:
        answer = http.get("/api/artifacts", params={param: "a\x00b"})
    error = answer.json()["error"]
    assert (answer.status_code, error["class"]) == (400, "InvalidInputError"), error
    assert error["message"] == f"The {what} cannot hold a NUL character."


def test_an_expired_token_is_refused_saying_when_and_a_client_exits_12(
    served, run_cli, monkeypatch
):
    """A token whose end has passed (set in the database, as a month later) is refused
    like a revoked one, 401 on a read, on a request with a body before it is read, and
    on a download link made while it was valid, in one line naming when it expired; the
    CLI prints that line and exits 12."""
    from datetime import datetime, timezone

    from zoo.db.models import ApiToken

    info, secret = served.reg.create_token("month", role="write", expires="30d")
    url = served.server.url
    with client(url, secret) as http:
        assert http.get("/api/artifacts").status_code == 200
        link = http.get("/api/artifacts/tiny-bert/files/config.json/link").json()["url"]

    def ended(session):
        session.get(ApiToken, info.id).expires_at = datetime(2026, 1, 1, tzinfo=timezone.utc)

    served.reg.transaction(ended)
    said = (
        "The token 'month' expired at 2026-01-01T00:00:00+00:00; an admin can create a new "
        "one (zoo token create)."
    )
    before = _state(served.reg)
    with client(url, secret) as http:
        for answer in (
            http.get("/api/artifacts"),
            http.get("/tiny-bert/resolve/main/config.json"),
            http.post("/api/materialize", json={"name": "tiny-bert", "layers": 1}),
        ):
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["message"] == said
            assert answer.headers["www-authenticate"].startswith("Bearer")
    gone = httpx.get(f"{url}{link}")
    assert gone.status_code == 401
    assert gone.json()["error"]["message"] == said.replace(
        "'month'", "'month' this download link was made for"
    )
    assert _state(served.reg) == before
    monkeypatch.setenv("ZOO_ENDPOINT", url)
    monkeypatch.setenv("ZOO_TOKEN", secret)
    code, out, err = run_cli("ls")
    assert (code, out, err) == (12, "", f"zoo: error: {said}\n")
    monkeypatch.setenv("ZOO_TOKEN", served.tokens["admin"])
    code, out, err = run_cli("token", "list", "--json")
    month = next(t for t in json.loads(out) if t["name"] == "month")
    assert month["expired"] and month["expires_at"] == "2026-01-01T00:00:00+00:00"
    served.reg.revoke_token("month")


def test_a_download_link_made_near_its_tokens_end_says_it_ends_then(served):
    """A link asked for 90 seconds before its token ends works for those 90 seconds, not
    the 5 minutes a link lasts: its answer's expires_at and the link itself end with the
    token (the answer said five minutes, and the link was refused 401 after 90 seconds),
    and a token without an end still gets the full 5 minutes."""
    from datetime import datetime, timedelta
    from urllib.parse import parse_qs, urlsplit

    info, secret = served.reg.create_token("ending", role="read", expires="90s")
    try:
        with client(served.server.url, secret) as http:
            answer = http.get("/api/artifacts/tiny-bert/files/config.json/link").json()
        end = info.expires_at.replace(microsecond=0)
        assert datetime.fromisoformat(answer["expires_at"]) == end
        query = parse_qs(urlsplit(answer["url"]).query)
        assert int(query["expires"][0]) == int(end.timestamp())
        assert httpx.get(served.server.url + answer["url"]).status_code == 200
        with client(served.server.url, served.tokens["admin"]) as http:
            made = datetime.now(info.expires_at.tzinfo)
            answer = http.get("/api/artifacts/tiny-bert/files/config.json/link").json()
        lasts = datetime.fromisoformat(answer["expires_at"]) - made
        assert timedelta(seconds=290) < lasts <= timedelta(seconds=301)
    finally:
        served.reg.revoke_token("ending")


def test_the_servers_log_writes_its_times_in_utc_as_its_refusals_do(served, tmp_path):
    """A server run with TZ=Asia/Kolkata (UTC+05:30) writes each log line's time in UTC
    with its offset, as a token's end is written in its 401: it wrote 07:32 in the
    machine's zone, without one, for a refusal at 02:02 UTC of a token that "expired at
    02:02+00:00"."""
    import re
    from datetime import datetime, timedelta, timezone

    log = tmp_path / "kolkata.log"
    server = ZooServer({**served.env, "TZ": "Asia/Kolkata"}, log=log, cwd=tmp_path).start()
    try:
        asked = datetime.now(timezone.utc)
        assert httpx.get(f"{server.url}/api/artifacts").status_code == 401
        deadline = time.monotonic() + 10
        while '"GET /api/artifacts"' not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.stop()
    line = next(x for x in log.read_text().splitlines() if '"GET /api/artifacts"' in x)
    stamp = re.match(r"(\S+) INFO zoo\.server\.access: ", line)
    assert stamp, line
    logged = datetime.fromisoformat(stamp[1])
    assert logged.utcoffset() == timedelta(0)
    assert abs(logged - asked) < timedelta(seconds=30), (logged, asked)


def test_an_expired_admin_token_says_where_a_new_admin_token_is_made(served, run_cli, monkeypatch):
    """An admin whose token ended was told "an admin can create a new one (zoo token
    create)", which through the server needs the admin token that just ended. The line
    says to make one where the database is, as the first was; done so, the server takes
    the new token."""
    from datetime import datetime, timezone

    from zoo.db.models import ApiToken

    info, secret = served.reg.create_token("boss", role="admin", expires="30d")

    def ended(session):
        session.get(ApiToken, info.id).expires_at = datetime(2026, 1, 1, tzinfo=timezone.utc)

    served.reg.transaction(ended)
    monkeypatch.setenv("ZOO_ENDPOINT", served.server.url)
    monkeypatch.setenv("ZOO_TOKEN", secret)
    code, out, err = run_cli("token", "create", "--name", "boss", "--role", "admin")
    assert (code, out) == (12, "")
    assert err == (
        "zoo: error: The token 'boss' expired at 2026-01-01T00:00:00+00:00; make a new "
        "admin token where the registry's database is reachable, as the first one was "
        "(zoo token create --name NAME --role admin, without ZOO_ENDPOINT).\n"
    )
    monkeypatch.delenv("ZOO_ENDPOINT")
    monkeypatch.delenv("ZOO_TOKEN")
    for var in ("ZOO_HOME", "ZOO_DB_URL", "ZOO_STORE_URL"):
        monkeypatch.setenv(var, served.env[var])
    code, out, err = run_cli("token", "create", "--name", "boss", "--role", "admin")
    assert code == 0, err
    with client(served.server.url, out.strip()) as http:
        assert http.get("/api/tokens").status_code == 200
    served.reg.revoke_token("boss")
