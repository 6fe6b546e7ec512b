"""``zoo serve`` behind a reverse proxy that serves it under a path
(``https://tools.internal/zoo/``): a real proxy in this process (tests/pathproxy.py) in
front of a real server process, which either strips ``/zoo`` for a server that does not
know it, or passes the path on to one started with ``--root-path /zoo``. The proxy answers
404 to anything outside ``/zoo``, as a front end serving other tools there does, so a
request that loses the prefix fails."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from pathproxy import PathProxy
from zooserver import ZooServer, registry_for, server_env

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_dir):
    home = tmp_path_factory.mktemp("prefix")
    env = server_env(home)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    admin = reg.create_token("admin", role="admin")[1]
    plain = ZooServer(env, "--cache", str(home / "cache-plain"), log=home / "plain.log")
    rooted = ZooServer(
        env, "--root-path", "/zoo/", "--cache", str(home / "cache-rooted"), log=home / "rooted.log"
    )
    try:
        plain.start()
        rooted.start()
        yield SimpleNamespace(plain=plain, rooted=rooted, env=env, reg=reg, admin=admin, home=home)
    finally:
        plain.stop()
        rooted.stop()
        reg.close()


def _remote(monkeypatch, run_cli, endpoint: str, token: str):
    for var in ("ZOO_DB_URL", "ZOO_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ZOO_ENDPOINT", endpoint)
    monkeypatch.setenv("ZOO_TOKEN", token)
    return run_cli


def test_every_client_command_goes_under_the_prefix(
    served, run_cli, monkeypatch, tiny_dir, tmp_path
):
    """ZOO_ENDPOINT=https://host/zoo: listing, showing, importing a folder (an upload),
    materializing with --out (a download), auditing, lineage, aliases and tokens all go
    through the proxy under /zoo and print what the server's own address gives."""
    with PathProxy(served.plain.port) as proxy:
        cli = _remote(monkeypatch, run_cli, proxy.url, served.admin)
        out = tmp_path / "small"
        steps = [
            ("import", str(tiny_dir("gpt2", seed=3)), "--name", "prefixed-gpt2"),
            ("ls",),
            ("show", "prefixed-gpt2"),
            ("materialize", "tiny-bert", "--layers", "2", "--hidden", "16", "--out", str(out)),
            ("audit", str(out)),
            ("lineage", "tiny-bert"),
            ("tag", "prefixed-gpt2", "prefixed-alias"),
            ("alias-history", "prefixed-alias"),
            ("token", "create", "--name", "prefixed-reader"),
            ("token", "list"),
            ("token", "revoke", "prefixed-reader"),
        ]
        answers = {}
        for args in steps:
            code, text, err = cli(*args)
            assert code == 0, (args, err)
            answers[args] = text
        assert proxy.paths and all(p.startswith("/zoo/api/") for p in proxy.paths), proxy.paths
        sent = " ".join(proxy.paths)
        for route in ("/zoo/api/import/upload", "/zoo/api/materialize", "/zoo/api/audit"):
            assert route in sent, route
        # The folder downloaded through the proxy is the checkpoint recorded.
        made = answers[steps[3]].split()[0]
        assert f"derived {made}" in answers[steps[4]], answers[steps[4]]
        assert made in answers[("lineage", "tiny-bert")]
        # The same reads at the server's own address print the same.
        for args in (("ls",), ("show", "prefixed-gpt2"), ("lineage", "tiny-bert")):
            monkeypatch.setenv("ZOO_ENDPOINT", proxy.url)
            through = cli(*args)
            monkeypatch.setenv("ZOO_ENDPOINT", served.plain.url)
            assert through == cli(*args), args


def _page_references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#][^"]*)"', html)


def test_the_page_its_script_and_redirects_work_under_a_prefix_the_server_was_not_told(served):
    """The proxy strips /zoo and the server does not know it: the page's script, style,
    icon and API link are relative to the page, so they resolve under /zoo; a redirect
    (a path with or without its final slash) is relative too, and never names the
    address the proxy reached the server at."""
    with PathProxy(served.plain.port) as proxy, httpx.Client(timeout=120) as http:
        page_url = proxy.url + "/"
        html = http.get(page_url).text
        refs = _page_references(html)
        assert len(refs) == 4, refs
        for ref in refs:
            got = http.get(urljoin(page_url, ref))
            assert got.status_code == 200, (ref, got.text[:200])
        script = http.get(urljoin(page_url, "static/app.js")).text
        assert "document.currentScript.src" in script
        for asked, lands in (("/static", "/zoo/static/"), ("/api/health/", "/zoo/api/health")):
            got = http.get(proxy.url + asked)
            assert got.status_code == 307, asked
            location = got.headers["location"]
            assert "127.0.0.1" not in location, location
            assert urlsplit(urljoin(proxy.url + asked, location)).path == lands


def test_a_server_told_its_root_path_serves_it_stripped_or_not(served, run_cli, monkeypatch):
    """``zoo serve --root-path /zoo`` behind a proxy that passes /zoo on, or strips it:
    the client works, the page's links carry /zoo (the address without its final slash
    too), a download link is the proxy's path and its signature verifies whichever path
    the server saw, and the OpenAPI schema names the prefix."""
    cli = _remote(monkeypatch, run_cli, "", served.admin)
    files = served.reg.show("tiny-bert")
    auth = {"Authorization": f"Bearer {served.admin}"}
    for strip in (False, True):
        with PathProxy(served.rooted.port, strip=strip) as proxy, httpx.Client(timeout=120) as http:
            monkeypatch.setenv("ZOO_ENDPOINT", proxy.url)
            code, text, err = cli("show", "tiny-bert")
            assert code == 0 and files.content_hash in text, err
            bare = http.get(proxy.url)  # https://host/zoo, no final slash
            if strip:  # the proxy asked for /: the page, its links under /zoo
                html = bare.text
            else:
                assert bare.status_code == 307 and bare.headers["location"] == "zoo/"
                html = http.get(urljoin(proxy.url, "zoo/")).text
            refs = _page_references(html)
            assert refs and all(r.startswith("/zoo/") for r in refs), refs
            for ref in refs:
                assert http.get(f"http://127.0.0.1:{proxy.port}{ref}").status_code == 200, ref
            link = http.get(
                proxy.url + "/api/artifacts/tiny-bert/files/config.json/link", headers=auth
            ).json()
            assert link["url"].startswith("/zoo/api/artifacts/tiny-bert/files/config.json?")
            got = http.get(f"http://127.0.0.1:{proxy.port}{link['url']}")  # no header
            assert got.status_code == 200, got.text
            listed = http.get(proxy.url + "/api/artifacts/tiny-bert/files", headers=auth).json()
            assert (
                hashlib.sha256(got.content).hexdigest() == listed["files"]["config.json"]["sha256"]
            )
            schema = http.get(proxy.url + "/openapi.json").json()
            assert schema["servers"] == [{"url": "/zoo"}]
            forwarded = proxy.paths
        assert all(p.startswith("/zoo") for p in forwarded)
    # The server's own address keeps answering (a load balancer's probe, an admin).
    assert httpx.get(served.rooted.url + "/api/health").status_code == 200


HUB_SCRIPT = """
import json, os, torch
from huggingface_hub import snapshot_download
from transformers import AutoModelForMaskedLM
folder = snapshot_download("tiny-bert")
stripped = snapshot_download("tiny-bert", endpoint=os.environ["STRIPPED_ENDPOINT"])
model = AutoModelForMaskedLM.from_pretrained("tiny-bert").eval()
with torch.no_grad():
    logits = model(input_ids=torch.tensor([[1, 5, 9, 17, 33, 2]])).logits
print(json.dumps({"folder": folder, "stripped": stripped, "logits": logits.tolist()}))
"""


def test_hugging_face_clients_load_through_the_prefix(served, tmp_path, tiny_dir):
    """HF_ENDPOINT=https://host/zoo: huggingface_hub joins its paths onto the endpoint
    (``{endpoint}/api/models/...``, ``{endpoint}/{repo}/resolve/...``), so
    ``snapshot_download`` and ``from_pretrained`` go under the prefix, to a server told
    it and to one that is not; the model loaded is the imported one, logits and all."""
    import torch
    from transformers import AutoModelForMaskedLM

    with (
        PathProxy(served.rooted.port, strip=False) as passed,
        PathProxy(served.plain.port) as stripped,
    ):
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env.update(
            HF_ENDPOINT=passed.url,
            STRIPPED_ENDPOINT=stripped.url,
            HF_TOKEN=served.admin,
            HF_HOME=str(tmp_path / "hf"),
            HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
            HF_HUB_DISABLE_TELEMETRY="1",
        )
        run = subprocess.run(
            [sys.executable, "-c", HUB_SCRIPT],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        got = json.loads(run.stdout.strip().splitlines()[-1])
        assert passed.paths and stripped.paths
        assert all(p.startswith("/zoo/") for p in passed.paths + stripped.paths)
    source = tiny_dir("bert")
    from safetensors.torch import load_file

    imported = load_file(source / "model.safetensors")
    for folder in (got["folder"], got["stripped"]):
        served_weights = load_file(f"{folder}/model.safetensors")  # written by zoo's export
        assert served_weights.keys() == imported.keys()
        assert all(torch.equal(served_weights[k], imported[k]) for k in imported)
    reference = AutoModelForMaskedLM.from_pretrained(source).eval()
    with torch.no_grad():
        logits = reference(input_ids=torch.tensor([[1, 5, 9, 17, 33, 2]])).logits
    assert torch.allclose(logits, torch.tensor(got["logits"]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "root", ["zoo", "/zoo/../etc", "/zoo?x=1", "/zo o", "//evil.example", "/zoo//x"]
)
def test_a_root_path_that_is_not_a_plain_path_is_refused(root, tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "home").mkdir()
    serve = [sys.executable, "-m", "zoo_cli.main", "serve", "--port", "0"]
    run = subprocess.run(
        [*serve, "--root-path", root, "--cache", str(cache)],
        env=server_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=60,  # a root path taken would serve until killed
    )
    assert run.returncode == 2 and run.stdout == "", run.stderr
    assert run.stderr.count("\n") == 1 and "--root-path" in run.stderr, run.stderr
    assert not cache.exists()  # refused before anything was made


def test_the_page_works_in_a_browser_under_a_prefix_the_server_was_not_told(
    served, tmp_path, tiny_dir
):
    """In chromium, through the stripping proxy: the list, an artifact's page, a file
    downloaded with the token in the box (a signed link, followed under /zoo), and the
    HF_ENDPOINT the page tells users to set is the prefixed address."""
    from test_serve_browser import ARGS, CHROMIUM, _need_browser

    _need_browser()
    from playwright.sync_api import sync_playwright

    with PathProxy(served.plain.port) as proxy, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(accept_downloads=True)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # Before the token is typed the page's reads are refused (401); nothing it
            # asks for may be missing.
            page.on("response", lambda r: r.status == 404 and errors.append(r.url))
            page.goto(proxy.url + "/")
            page.fill("#token", served.admin)
            page.press("#token", "Enter")
            page.locator("tr.row[data-name='tiny-bert'] a").wait_for()
            page.locator("tr.row[data-name='tiny-bert'] a").click()
            page.wait_for_selector("#graph svg")
            assert (
                f"HF_ENDPOINT={proxy.url} "
                in page.locator("pre", has_text="HF_ENDPOINT").inner_text()
            )
            link = page.locator("#files a.file[download='config.json']")
            link.wait_for()
            with page.expect_download() as got:
                link.click()
            saved = tmp_path / "config.json"
            got.value.save_as(saved)
            path, _, query = got.value.url.partition("?")
            assert path == proxy.url + "/api/artifacts/tiny-bert/files/config.json"
            assert "signature=" in query
            context.close()
        finally:
            browser.close()
        assert errors == []
        outside = [u for u in proxy.paths if not u.startswith("/zoo/")]
        assert outside == [], outside
    assert saved.read_bytes() == (tiny_dir("bert") / "config.json").read_bytes()
