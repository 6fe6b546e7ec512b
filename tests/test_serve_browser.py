"""The web page in a real browser (Playwright driving Debian's chromium) against a real
server process: browse -> artifact -> lineage -> audit, and the defaults table.

Screenshots go to ``$ZOO_SCREENSHOTS`` when it is set (docs/screenshots/ holds the
committed ones). Without chromium or Playwright the tests skip, except under
``ZOO_REQUIRE_SERVICES=1`` (CI), where they must run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from zooserver import ZooServer, registry_for, server_env

CHROMIUM = os.environ.get("ZOO_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _need_browser():
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "Playwright is not installed (pip install playwright)"
    if missing is None and not Path(CHROMIUM).exists():
        missing = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("ZOO_REQUIRE_SERVICES"):
            pytest.fail(f"{missing}; ZOO_REQUIRE_SERVICES needs the browser tests to run")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_dir):
    _need_browser()
    home = tmp_path_factory.mktemp("site")
    env = server_env(home)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("bert"), name="bert-base-tiny")
    reg.import_checkpoint(tiny_dir("gpt2"), name="gpt2-tiny")
    lg = reg.extract("bert-base-tiny", wavelet="haar", name="bert-tiny-haar")
    reg.tag(lg.name, "bert-lg")
    out = home / "exports" / "bert-2x16"
    small = reg.materialize(lg.name, layers=2, hidden=16, out=out)
    reg.materialize(lg.name, layers=3, hidden=24, heads=4)
    reg.extract("gpt2-tiny", name="gpt2-tiny-db2")
    server = ZooServer(env, "--public-read", log=home / "server.log").start()
    try:
        yield SimpleNamespace(url=server.url, reg=reg, small=small.artifact, out=out, lg=lg)
    finally:
        server.stop()
        reg.close()


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # The page's own policy refusing something the page does is a console error.
    pg.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))
    yield pg
    context.close()
    assert errors == []  # no script error and nothing the page's policy refused


def _shot(page, name: str) -> None:
    folder = os.environ.get("ZOO_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_a_late_answer_to_an_older_query_is_not_drawn(site, page):
    """The server answers on several threads, so the answer to an earlier query can
    arrive after a later one's: the table shows the later query's result. The page's
    fetch is wrapped so that the unfiltered listing comes back 800 ms late."""
    page.add_init_script(
        """
        const realFetch = window.fetch;
        window.fetch = async (url, opts) => {
          const r = await realFetch(url, opts);
          const u = String(url);
          if (new URL(u).pathname === "/api/artifacts" && !u.includes("kind=") && window.zooSlow) {
            await new Promise((done) => setTimeout(done, 800));
          }
          return r;
        };
        """
    )
    page.goto(site.url + "/")
    page.locator("tr.row").first.wait_for()
    page.evaluate("window.zooSlow = true")
    page.fill("#q", "x")
    page.fill("#q", "")  # asks for every artifact: answered late
    page.select_option("#kind", "derived")  # asked after, answered at once
    page.wait_for_function("() => document.querySelectorAll('tr.row').length === 2")
    page.wait_for_timeout(1500)  # the late answer has arrived by now
    assert page.locator("tr.row").count() == 2
    assert page.locator("#count").inner_text() == "2 artifacts"


def test_a_page_left_before_its_answers_arrive_is_not_drawn_over_the_next(site, page):
    """Leaving an artifact's page before its lineage graph arrives, for another artifact's
    page (with the same element ids), shows the second artifact's graph, never the first
    one's; leaving before the artifact itself arrives shows the page navigated to."""
    page.add_init_script(
        """
        const realFetch = window.fetch;
        window.fetch = async (url, opts) => {
          const r = await realFetch(url, opts);
          if (window.zooSlow && String(url).includes(window.zooSlow)) {
            await new Promise((done) => setTimeout(done, 800));
          }
          return r;
        };
        """
    )
    page.goto(site.url + "/")
    page.locator("tr.row").first.wait_for()

    def nodes() -> set[str]:
        found = page.locator("#graph svg g.node")
        return {found.nth(i).get_attribute("data-name") for i in range(found.count())}

    # The learngene's graph comes late; meanwhile the user opens gpt2-tiny's page.
    page.evaluate(f"window.zooSlow = '{site.lg.name}/lineage?format=svg'")
    page.evaluate(f"location.hash = '#/artifact/{site.lg.name}'")
    page.wait_for_function(f"() => document.querySelector('h1').textContent === '{site.lg.name}'")
    page.evaluate("location.hash = '#/artifact/gpt2-tiny'")
    page.wait_for_selector("#graph svg")
    page.wait_for_timeout(1500)  # the learngene's late graph has arrived by now
    assert page.locator("h1").inner_text() == "gpt2-tiny"
    assert "gpt2-tiny" in nodes() and site.lg.name not in nodes()
    # The artifact itself comes late; meanwhile the user goes to the defaults.
    page.evaluate(f"window.zooSlow = '/api/artifacts/{site.small.name}'")
    page.evaluate(f"location.hash = '#/artifact/{site.small.name}'")
    page.evaluate("location.hash = '#/defaults'")
    page.wait_for_function("() => document.querySelector('h1').textContent === 'Defaults'")
    page.wait_for_timeout(1500)
    assert page.locator("h1").inner_text() == "Defaults"


def test_dot_and_mermaid_are_asked_for_when_their_panel_is_opened(site, page):
    """Both list every edge (a base model with ten thousand fine-tunes: over a megabyte
    between them), so an artifact's page asked for them with every visit, whether or not
    anyone opened their panel: now the panel's first opening asks, and shows what the API
    answers."""
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(site.url + f"/#/artifact/{site.lg.name}")
    page.wait_for_selector("#graph svg")
    page.wait_for_function("() => document.getElementById('card')?.textContent !== '…'")
    lineage = [u for u in asked if "/lineage?" in u]
    assert len(lineage) == 1 and "format=svg" in lineage[0], lineage
    assert page.locator("#dot").inner_text() == ""
    page.click("#graph-text summary")
    page.wait_for_function(
        "() => document.getElementById('mermaid').textContent.startsWith('graph')"
    )
    page.wait_for_function("() => document.getElementById('dot').textContent.startsWith('digraph')")
    url = f"{site.url}/api/artifacts/{site.lg.name}/lineage"
    for format in ("dot", "mermaid"):
        expected = httpx.get(url, params={"format": format, "all": "true"}).text
        assert page.locator(f"#{format}").text_content() == expected
    page.click("#graph-text summary")  # closed and opened again: asked once
    page.click("#graph-text summary")
    page.wait_for_timeout(300)
    formats = sorted(u.split("format=")[1].split("&")[0] for u in asked if "/lineage?" in u)
    assert formats == ["dot", "mermaid", "svg"]


def test_browse_artifact_lineage_and_audit_in_a_browser(site, page, tmp_path):
    page.goto(site.url + "/")
    rows = page.locator("tr.row")
    rows.first.wait_for()
    everything = len(site.reg.list())
    assert rows.count() == everything
    # Search narrows the table as the registry's list does.
    page.fill("#q", "bert-lg")
    page.wait_for_function("() => document.querySelectorAll('tr.row').length === 1")
    assert page.locator("tr.row").first.get_attribute("data-name") == site.lg.name
    page.fill("#q", "")
    page.select_option("#kind", "derived")
    page.wait_for_function("() => document.querySelectorAll('tr.row').length === 2")
    page.select_option("#kind", "")
    # Clearing the filter brings every artifact back.
    page.wait_for_function(f"() => document.querySelectorAll('tr.row').length === {everything}")
    _shot(page, "browse")

    # Artifact: a derived checkpoint's page, with its recipe, tensors and lineage.
    page.click(f"tr.row[data-name='{site.small.name}']")
    page.wait_for_selector("#graph svg")
    assert page.locator("h1").inner_text() == site.small.name
    text = page.locator("main").inner_text()
    assert site.small.content_hash in text
    assert f"{len(site.small.tensors)} tensors" in text
    assert "haar" in text  # the recipe's wavelet
    page.wait_for_function("() => !document.getElementById('card').classList.contains('muted')")
    assert "This is an initialization" in page.locator("#card").inner_text()
    nodes = page.locator("#graph svg g.node")
    assert {nodes.nth(i).get_attribute("data-name") for i in range(nodes.count())} >= {
        "bert-base-tiny",
        site.lg.name,
        site.small.name,
    }
    _shot(page, "artifact")

    # Lineage: click through the graph to the learngene, then to the source.
    page.click(f"#graph svg g.node[data-name='{site.lg.name}']")
    page.wait_for_function(f"() => document.querySelector('h1').innerText === '{site.lg.name}'")
    page.wait_for_selector("#graph svg")
    derived_nodes = page.locator("#graph svg g.node-derived")
    assert derived_nodes.count() == 2  # both sizes made from it
    _shot(page, "lineage")
    page.click("#graph svg g.node[data-name='bert-base-tiny']")
    page.wait_for_function("() => document.querySelector('h1').innerText === 'bert-base-tiny'")

    # Audit: a file dropped on the page is hashed in the browser and identified.
    page.click("a[data-nav='audit']")
    page.set_input_files(
        "#pick", [str(site.out / "model.safetensors"), str(site.out / "config.json")]
    )
    page.wait_for_selector(".verdict")
    assert page.locator(".verdict .badge").inner_text() == "known"
    assert site.small.name in page.locator(".verdict").inner_text()
    page.wait_for_selector("#audit-graph svg")
    _shot(page, "audit")

    # A changed file is caught: one tensor's bytes altered.
    changed = tmp_path / "model.safetensors"
    raw = bytearray((site.out / "model.safetensors").read_bytes())
    raw[-4:] = b"\x00\x00\x80\x7f"
    changed.write_bytes(bytes(raw))
    page.set_input_files("#pick", [str(changed)])
    page.wait_for_function(
        "() => document.querySelector('.verdict .badge') && "
        "document.querySelector('.verdict .badge').innerText === 'modified'"
    )


def test_a_library_larger_than_a_page_pages_on_and_files_download_with_a_token(
    browser, tmp_path, tiny_dir
):
    """On a server without --public-read: the table shows the newest 50, and "Older
    artifacts" brings the rest, none twice; a file link on an artifact's page downloads
    with the token typed in the box, through a signed link (a plain link sends no token)."""
    (tmp_path / "home").mkdir()
    env = server_env(tmp_path / "home")
    reg = registry_for(env)
    src = reg.import_checkpoint(tiny_dir("gpt2"), name="gpt2-tiny")
    for seed in range(55):
        reg.materialize(src.name, layers=1, hidden=8, method="scratch", seed=seed)
    _, secret = reg.create_token("reader", role="read")
    server = ZooServer(env, log=tmp_path / "server.log").start()
    context = browser.new_context(accept_downloads=True)
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        page.fill("#token", secret)
        page.press("#token", "Enter")  # as a user commits it: the page reloads with it
        page.wait_for_function("() => document.querySelectorAll('tr.row').length === 50")
        assert page.locator("#count").inner_text() == "newest 50 of 56 artifacts"
        # A next page that fails (the server restarting) leaves the rows shown; the button
        # asks again.
        page.route("**/api/artifacts?*after=*", lambda route: route.abort(), times=1)
        page.click("#more")
        page.wait_for_selector("#rows tr.failed")
        assert page.locator("tr.row").count() == 50 and page.locator("#more").is_visible()
        page.click("#more")
        page.wait_for_function("() => document.querySelectorAll('tr.row').length === 56")
        assert page.locator("#rows tr.failed").count() == 0
        names = [r.get_attribute("data-name") for r in page.locator("tr.row").all()]
        assert sorted(names) == sorted(i.name for i in reg.list())
        assert page.locator("#more").is_hidden()
        assert page.locator("#count").inner_text() == "56 artifacts"
        # The address holds what is shown: back from an artifact's page, the same 56 rows,
        # scrolled where they were; after a reload, the same 56 rows.
        assert page.evaluate("location.hash") == "#/?rows=56"
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_timeout(500)  # the position is kept once scrolling stops
        scrolled = page.evaluate("window.scrollY")
        assert scrolled > 0
        page.locator("tr.row a").last.click()
        page.wait_for_function("() => location.hash.startsWith('#/artifact/')")
        page.go_back()
        page.wait_for_function("() => document.querySelectorAll('tr.row').length === 56")
        assert page.evaluate("window.scrollY") == scrolled
        page.reload()
        page.wait_for_function("() => document.querySelectorAll('tr.row').length === 56")
        # A new query hides "Older" until its own first page is drawn: the old cursor
        # would page on under the new filter.
        page.goto(server.url + "/#/artifact/gpt2-tiny")
        page.goto(server.url + "/")
        page.wait_for_function("() => document.querySelectorAll('tr.row').length === 50")
        held = []  # the new query's answer, held back while the page waits for it
        page.route("**/api/artifacts?*q=*", lambda route: held.append(route))
        page.fill("#q", "scratch")
        page.wait_for_timeout(300)
        assert held and page.locator("#more").is_hidden()
        for route in held:
            route.continue_()
        page.wait_for_function(
            "() => document.getElementById('count').textContent.includes(' of 55 ')"
        )
        assert page.locator("#more").is_visible()  # 55 match: its own next page
        page.unroute("**/api/artifacts?*q=*")

        page.goto(server.url + "/#/artifact/gpt2-tiny")
        link = page.locator("#files a.file[download='config.json']")
        link.wait_for()
        with page.expect_download() as got:
            link.click()
        saved = tmp_path / "config.json"
        got.value.save_as(saved)
        assert saved.read_bytes() == (tiny_dir("gpt2") / "config.json").read_bytes()
        # Saved from the server's answer as it arrived (a signed link), not from a copy
        # the page held in memory (a blob: URL).
        path, _, query = got.value.url.partition("?")
        assert path == server.url + "/api/artifacts/gpt2-tiny/files/config.json"
        assert "signature=" in query
        # A token revoked meanwhile: the page says so where the user clicked.
        reg.revoke_token("reader")
        link.click()
        error = page.locator("#download-error")
        error.wait_for()
        assert "config.json: The token is unknown or revoked." in error.inner_text()
        # ...and the top of the page no longer names the token's holder.
        page.goto(server.url + "/#/")
        page.wait_for_function(
            "() => document.getElementById('whoami').textContent === 'sign in with a token'"
        )
    finally:
        context.close()
        server.stop()
        reg.close()


def _tab_to(page, element_id: str, presses: int = 20) -> bool:
    """Press Tab from the top of the page until the element ``element_id`` has the focus."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return True
    return False


def test_a_file_is_audited_from_the_keyboard_alone(site, page):
    """The drop zone's file picker is in the Tab order (an input hidden outright is not):
    Tab reaches it, the drop zone shows it has the focus, and the file picked through it
    is identified. (Space on a focused file input opens the chooser: the browser's part.)"""
    page.goto(site.url + "/#/audit")
    page.wait_for_selector("#drop")
    assert _tab_to(page, "pick")
    assert page.evaluate("document.getElementById('drop').matches(':focus-within')")
    page.set_input_files("#pick", [str(site.out / "model.safetensors")])
    page.wait_for_selector(".verdict")
    assert page.locator(".verdict .badge").inner_text() == "known"
    assert site.small.name in page.locator(".verdict").inner_text()


def test_every_control_of_the_library_has_a_name_a_screen_reader_says(site, page):
    """A placeholder is no label, and a select has none of its own: each of the library's
    filters is named for assistive technology (Chromium's accessibility tree)."""
    page.goto(site.url + "/")
    page.locator("tr.row").first.wait_for()
    named = {
        ("searchbox", "Search names and aliases"): "q",
        ("combobox", "Kind"): "kind",
        ("combobox", "Family"): "family",
        ("textbox", "Size (layers x hidden)"): "size",
    }
    for (role, name), element_id in named.items():
        control = page.get_by_role(role, name=name, exact=True)
        assert control.count() == 1, (role, name)
        assert control.get_attribute("id") == element_id, (role, name)


def test_each_view_has_its_own_title_and_the_back_button_returns_to_it(site, page):
    """Tabs, bookmarks and the history list name a page by its title: each view of the
    page has its own, and going back restores the view and its title together."""
    page.goto(site.url + "/")
    page.locator("tr.row").first.wait_for()
    assert page.title() == "Library · zoo"
    page.click(f"tr.row[data-name='{site.lg.name}'] a")
    page.wait_for_selector("h1")
    page.wait_for_function(f"() => document.querySelector('h1').innerText === '{site.lg.name}'")
    assert page.title() == f"{site.lg.name} · zoo"
    page.click("a[data-nav='audit']")
    page.wait_for_selector("#drop")
    assert page.title() == "Audit a checkpoint · zoo"
    page.click("a[data-nav='defaults']")
    page.wait_for_selector("table")
    assert page.title() == "Defaults · zoo"
    page.go_back()
    page.wait_for_selector("#drop")
    assert page.title() == "Audit a checkpoint · zoo"
    page.go_back()
    page.wait_for_function(f"() => document.querySelector('h1').innerText === '{site.lg.name}'")
    assert page.title() == f"{site.lg.name} · zoo"


@pytest.mark.parametrize("width", [360, 768])
def test_a_narrow_window_scrolls_down_only_and_keeps_the_token_box_in_view(site, browser, width):
    """On a phone or a narrow window no view is wider than the window: the header and
    the filters wrap, the artifact's cards stack, and a table wider than its card scrolls
    inside it, so the token box and every card's right edge stay on screen."""
    context = browser.new_context(viewport={"width": width, "height": 800})
    try:
        page = context.new_page()
        for route, ready in (
            ("/", "tr.row"),
            (f"/#/artifact/{site.small.name}", "#graph svg"),
            ("/#/defaults", "table"),
            ("/#/audit", "#drop"),
        ):
            page.goto(site.url + route)
            page.wait_for_selector(ready)
            assert page.evaluate("document.documentElement.scrollWidth") <= width, route
            box = page.locator("#token").bounding_box()
            assert box["x"] + box["width"] <= width, route
    finally:
        context.close()


def test_the_defaults_table_is_zoos(site, page):
    from zoo.defaults import DEFAULTS

    page.goto(site.url + "/#/defaults")
    page.wait_for_selector("tbody tr")
    assert page.locator("tbody tr").count() == len(DEFAULTS)
    row = page.locator("tbody tr", has_text="gpt2").first.inner_text()
    assert "weight-selection" in row
    _shot(page, "defaults")


def test_anonymous_readers_cannot_write(site):
    with httpx.Client(base_url=site.url) as http:
        assert http.get("/api/artifacts").status_code == 200
        assert http.get("/api/whoami").json() == {"name": "anonymous", "role": "read"}
        denied = http.post("/api/artifacts/gpt2-tiny/aliases", json={"alias": "x"})
        assert denied.status_code == 401
    assert site.reg.show("gpt2-tiny").aliases == ()


def test_the_page_vendors_nothing_it_would_fetch_from_elsewhere():
    static = Path(__file__).parent.parent / "zoo" / "server" / "static"
    for f in static.iterdir():
        text = f.read_text()
        assert "http://" not in text.replace("http://www.w3.org", "")
        assert "https://" not in text
    assert shutil.which  # the page is three files of zoo's own


# The page's narrowing of hex bytes, as hex (null where the dtype does not hold them).
NARROW_HEX = """(h) => {
  const b = new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16))).buffer;
  const x = (r) => r && [...new Uint8Array(r)].map((v) => v.toString(16).padStart(2, "0")).join("");
  return [x(narrowBF16(b)), x(narrowF16(b))];
}"""


def test_the_page_audits_a_float32_save_of_a_bf16_checkpoint_as_it(site, page, tmp_path, tiny_dir):
    """The browser narrows float32 tensors as zoo.checkpoint.casts does (bit for bit, the
    same bytes as numpy's casts), and a bf16 checkpoint saved as float32 is found."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    page.goto(site.url + "/#/audit")
    page.wait_for_selector("#pick", state="attached")
    rng = np.random.default_rng(0)
    half = rng.standard_normal(4096).astype(np.float16)
    half[:8] = [np.inf, -np.inf, np.nan, -0.0, 6e-8, -(2**-24), 65504, 1e-5]  # edges, subnormals
    bf16 = (rng.standard_normal(4096).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(
        np.float32
    )
    for wide in (half.astype(np.float32), bf16, rng.standard_normal(64).astype(np.float32)):
        with np.errstate(all="ignore"):
            f16 = wide.astype("<f2")
        exact16 = np.array_equal(f16.astype(np.float32).view(np.uint32), wide.view(np.uint32))
        bits = wide.view(np.uint32)
        exact_bf = not np.any(bits & 0xFFFF)
        got = page.evaluate(NARROW_HEX, wide.tobytes().hex())
        assert got[0] == ((bits >> 16).astype("<u2").tobytes().hex() if exact_bf else None)
        assert got[1] == (f16.tobytes().hex() if exact16 else None)

    folder = tmp_path / "bf16"
    shutil.copytree(tiny_dir("llama"), folder)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, folder / "model.safetensors")
    src = site.reg.import_checkpoint(folder, name="llama-bf16-tiny")
    widened = tmp_path / "model.safetensors"
    save_file({k: v.to(torch.bfloat16).float() for k, v in weights.items()}, widened)
    page.set_input_files("#pick", [str(widened)])
    page.wait_for_selector(".verdict")
    assert page.locator(".verdict .badge").inner_text() == "known"
    assert src.name in page.locator(".verdict").inner_text()
    assert "recorded BF16 values exactly" in page.locator(".cast").inner_text()

    # Its embeddings and head kept in float32 (values a bf16 holds, so narrowing all of
    # them finds the rest only), the rest bf16: matched tensor by tensor.
    wide = ("model.embed_tokens.weight", "lm_head.weight")
    seeded = load_file(tiny_dir("llama", seed=1) / "model.safetensors")  # not the one above
    rounded = {k: v.to(torch.bfloat16) for k, v in seeded.items()}
    mixed = {k: v.float() if k in wide else v for k, v in rounded.items()}
    save_file(mixed, folder / "model.safetensors")
    other = site.reg.import_checkpoint(folder, name="llama-mixed-tiny")
    save_file({k: v.float() for k, v in mixed.items()}, widened)
    assert other.name in _audited_again(page, site, widened, "known")

    # The other way: a float32 checkpoint rounded to bf16 (the server finds the records
    # the page's hashes round from) is that checkpoint, cast down.
    wide_src = site.reg.import_checkpoint(tiny_dir("llama", seed=2), name="llama-f32-tiny")
    weights = load_file(tiny_dir("llama", seed=2) / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, widened)
    verdict = _audited_again(page, site, widened, "known")
    assert wide_src.name in verdict and "cast down" in verdict, verdict
    assert "recorded float32 values rounded to nearest" in page.locator(".cast").inner_text()

    # A masked LM's base model saved on its own (names without "bert.", no MLM head).
    mlm = site.reg.import_checkpoint(tiny_dir("bert", seed=4), name="bert-mlm-tiny")
    weights = load_file(tiny_dir("bert", seed=4) / "model.safetensors")
    save_file(
        {k.removeprefix("bert."): v for k, v in weights.items() if k.startswith("bert.")}, widened
    )
    verdict = _audited_again(page, site, widened, "modified")
    assert mlm.name in verdict and "its base model, saved without its head" in verdict, verdict
    assert "without the prefix bert." in page.locator(".cast").inner_text()


def _audited_again(page, site, file, status: str) -> str:
    """The page's verdict on ``file``, audited afresh (leaving the page clears the last
    one), once its badge says ``status``."""
    page.goto(site.url + "/#/")
    page.goto(site.url + "/#/audit")
    page.set_input_files("#pick", [str(file)])
    page.wait_for_function(
        "(s) => { const b = document.querySelector('.verdict .badge'); "
        "return b && b.innerText === s; }",
        arg=status,
    )
    return page.locator(".verdict").inner_text()


def test_the_page_reads_a_config_as_zoo_audit_does(site, page, tmp_path, tiny_dir):
    """A decoder's config holds floats like 10000.0, which a browser's JSON.parse turns into
    10000 (another content hash): the page sends the file's text, so an exact copy is
    known with an unchanged config, as `zoo audit` says, and a config that is not JSON is
    refused naming the file."""
    folder = tmp_path / "llama"
    shutil.copytree(tiny_dir("llama", seed=3), folder)
    assert ".0," in (folder / "config.json").read_text()  # a float written as Python does
    src = site.reg.import_checkpoint(folder, name="llama-config-floats")
    assert not site.reg.audit(folder).config_differs
    page.goto(site.url + "/#/audit")
    page.wait_for_selector("#pick", state="attached")
    page.set_input_files("#pick", [str(folder / "model.safetensors"), str(folder / "config.json")])
    page.wait_for_selector(".verdict")
    verdict = page.locator(".verdict").inner_text()
    assert page.locator(".verdict .badge").inner_text() == "known", verdict
    assert src.name in verdict and "config.json differs" not in verdict
    (folder / "config.json").write_text("{not json")
    page.goto(site.url + "/#/")
    page.goto(site.url + "/#/audit")
    page.set_input_files("#pick", [str(folder / "model.safetensors"), str(folder / "config.json")])
    page.wait_for_selector(".error")
    assert "config.json is not valid JSON" in page.locator(".error").inner_text()


def test_the_page_audits_every_shard_of_a_sharded_checkpoint(site, page, tmp_path):
    """Shards picked together are one checkpoint, as `zoo audit FOLDER` reads them: known;
    one shard alone is that checkpoint with tensors missing; a tensor in two shards is
    refused."""
    import json

    out = site.reg.export("gpt2-tiny", out=tmp_path / "sharded", max_shard_size="8KB")
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 2
    index = json.loads((out / "model.safetensors.index.json").read_text())
    page.goto(site.url + "/#/audit")
    page.wait_for_selector("#pick", state="attached")
    page.set_input_files("#pick", [str(p) for p in out.iterdir()])
    page.wait_for_selector(".verdict")
    assert page.locator(".verdict .badge").inner_text() == "known"
    verdict = page.locator(".verdict").inner_text()
    assert "gpt2-tiny" in verdict and f"and {len(shards) - 1} more shards" in verdict

    page.goto(site.url + "/#/")
    page.goto(site.url + "/#/audit")
    page.set_input_files("#pick", [str(shards[-1]), str(out / "config.json")])
    page.wait_for_selector(".verdict")
    alone = site.reg.audit(shards[-1])  # what zoo audit says of that one file
    assert page.locator(".verdict .badge").inner_text() == alone.status == "modified"
    missing = sum(1 for f in index["weight_map"].values() if f != shards[-1].name)
    assert len(alone.missing) == missing
    assert f"{missing} missing (one shard of it" in page.locator(".verdict").inner_text()
    assert "is a part of gpt2-tiny" in page.locator(".verdict").inner_text()

    page.goto(site.url + "/#/")
    page.goto(site.url + "/#/audit")
    twice = tmp_path / "copy"
    twice.mkdir()
    shutil.copy(shards[0], twice / "model-copy.safetensors")
    page.set_input_files("#pick", [str(shards[0]), str(twice / "model-copy.safetensors")])
    page.wait_for_selector("#result .error")
    assert "is in both" in page.locator("#result .error").inner_text()

    # An index that says nothing of its shards is refused in zoo audit's words.
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    page.goto(site.url + "/#/")
    page.goto(site.url + "/#/audit")
    page.set_input_files("#pick", [str(p) for p in out.iterdir()])
    page.wait_for_selector("#result .error")
    assert "has no non-empty weight_map" in page.locator("#result .error").inner_text()


def test_the_page_refuses_a_damaged_file_as_zoo_audit_does_and_reads_a_folder_as_it(
    site, page, tmp_path
):
    """Bytes appended to a registered file, a truncated download, a forged offset, an
    empty file, a header that is not JSON: each is what `zoo audit` refuses, in its words
    (hashing only what the offsets name would call a file with a payload appended "known
    ... bit for bit"). A folder's files are read as zoo audit reads the folder:
    model.safetensors when it is there, whatever other .safetensors lie beside it."""
    import json
    import struct

    from zoo.errors import InvalidCheckpointError

    out = site.reg.export("gpt2-tiny", out=tmp_path / "whole")
    good = (out / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8 : 8 + n])
    first = next(k for k in header if k != "__metadata__")
    forged = dict(header, **{first: dict(header[first], data_offsets=[8, 0])})
    text = json.dumps(forged).encode()
    size = header[first]["data_offsets"][1] - header[first]["data_offsets"][0]
    itemsize = {"F32": 4, "F16": 2, "BF16": 2}[header[first]["dtype"]]
    axes = dict(header, **{first: dict(header[first], shape=[size // itemsize] + [1] * 16)})
    many = json.dumps(axes).encode()
    damaged = {
        "appended.safetensors": good + bytes(4096),
        "truncated.safetensors": good[:-100],
        "empty.safetensors": b"",
        "forged.safetensors": struct.pack("<Q", len(text)) + text + good[8 + n :],
        "notjson.safetensors": struct.pack("<Q", 9) + b"not json!" + good[8 + n :],
        "axes.safetensors": struct.pack("<Q", len(many)) + many + good[8 + n :],
        # A length no float64 holds exactly: the page says the one the file declares.
        "huge.safetensors": struct.pack("<Q", 7595448452415441744) + good[8:],
    }
    for name, data in damaged.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InvalidCheckpointError) as cli:
            site.reg.audit(path)
        says = str(cli.value).removeprefix(str(path)).strip()
        page.goto(site.url + "/#/")
        page.goto(site.url + "/#/audit")
        page.wait_for_selector("#pick", state="attached")
        page.set_input_files("#pick", [str(path)])
        page.wait_for_selector("#result .error")
        shown = page.locator("#result .error").inner_text()
        words = says.split(" (")[0] if name == "notjson.safetensors" else says
        assert shown.startswith(f"{name} {words}"), (name, shown, says)
    # Sizes written as floats (32.0), which JSON.parse reads as 32: refused, as zoo audit
    # refuses them, not called the registered file.
    shape = [float(d) for d in header[first]["shape"]]
    floats = json.dumps(dict(header, **{first: dict(header[first], shape=shape)})).encode()
    path = tmp_path / "floats.safetensors"
    path.write_bytes(struct.pack("<Q", len(floats)) + floats + good[8 + n :])
    with pytest.raises(InvalidCheckpointError):
        site.reg.audit(path)
    page.goto(site.url + "/#/")
    page.goto(site.url + "/#/audit")
    page.set_input_files("#pick", [str(path)])
    page.wait_for_selector("#result .error")
    assert "not whole numbers" in page.locator("#result .error").inner_text()
    beside = tmp_path / "whole" / "adapter_model.safetensors"
    shutil.copy(tmp_path / "appended.safetensors", beside)  # not read: model.safetensors is
    assert site.reg.audit(out).status == "known"
    page.goto(site.url + "/#/")
    page.goto(site.url + "/#/audit")
    page.set_input_files("#pick", [str(p) for p in out.iterdir()])
    page.wait_for_selector(".verdict")
    assert page.locator(".verdict .badge").inner_text() == "known"


def test_a_checkpoint_zoo_does_not_resize_and_a_placeholder_say_what_they_are(site, page, tmp_path):
    """A catalogued-only checkpoint (a T5) is offered no other size (the server refuses
    one); a placeholder holds nothing, and says so; no drawing labels a missing family."""
    import torch
    import transformers

    config = transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2)
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    (tmp_path / "t5" / "README.md").write_text("---\nbase_model: acme/t5-base\n---\n")
    t5 = site.reg.import_checkpoint(tmp_path / "t5", name="t5-catalogued")
    page.goto(site.url + f"/#/artifact/{t5.name}")
    page.wait_for_selector("#graph svg")
    use = page.locator("text=Use it").locator("..").inner_text()
    assert "from_pretrained" in use and "another size" not in use
    assert "None" not in page.locator("#graph").inner_text()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.goto(site.url + "/#/artifact/acme%2Ft5-base")
    page.wait_for_function("() => document.querySelector('h1')?.innerText === 'acme/t5-base'")
    page.wait_for_selector("#graph svg")
    text = page.locator("#view").inner_text()
    assert "weights in the store" not in text and "registered as imported" not in text
    assert "holds no weights" in text and "None" not in page.locator("#graph").inner_text()
    # The page's requests made with it have all been answered (the card's last): a
    # placeholder has no files, and none were asked for (the server refuses the listing).
    page.wait_for_function("() => document.getElementById('card')?.textContent !== '…'")
    assert any("/card" in url for url in asked)
    assert not any(url.endswith("/files") for url in asked), asked
    # Placeholders are a kind the browse page filters by, as `zoo ls --kind` does.
    page.goto(site.url + "/")
    page.locator("tr.row").first.wait_for()
    page.select_option("#kind", "placeholder")
    placeholders = [i.name for i in site.reg.list(kind="placeholder")]
    page.wait_for_function(
        f"() => document.querySelectorAll('tr.row').length === {len(placeholders)}"
    )
    rows = page.locator("tr.row")
    assert {rows.nth(i).get_attribute("data-name") for i in range(rows.count())} == set(
        placeholders
    )


def test_the_size_the_page_suggests_is_one_the_server_makes(site, page):
    """The "Use it" snippet's smaller revision keeps head_dim, as zoo's defaults do, for
    every family (a 3-head GPT-2 of 3x24 included: half its hidden size, 12, is not a
    multiple of its head_dim 8)."""
    import transformers
    from tinymodels import TINY

    from zoo.families import TargetSize, family_for_config

    page.goto(site.url + "/#/")
    page.wait_for_selector("tr.row")
    configs = [
        getattr(transformers, spec["arch"]).config_class(**spec["config"]).to_dict()
        for spec in TINY.values()
    ]
    configs.append(transformers.GPT2Config(n_layer=3, n_embd=24, n_head=3).to_dict())
    # Grouped-query heads: whole key/value groups at the source's heads per hidden unit
    # (SmolLM2-135M's 9 heads on 3; and a Qwen3 whose head_dim is not hidden / heads).
    for heads, kv, hidden, extra in ((9, 3, 72, {}), (6, 3, 48, {}), (3, 1, 48, {"head_dim": 32})):
        cls = transformers.Qwen3Config if extra else transformers.LlamaConfig
        configs.append(
            cls(
                num_hidden_layers=2,
                hidden_size=hidden,
                num_attention_heads=heads,
                num_key_value_heads=kv,
                intermediate_size=2 * hidden,
                **extra,
            ).to_dict()
        )
    for config in configs:
        family = family_for_config(config)
        sizes = family.axis_sizes(config)
        size = page.evaluate(
            "([size, config]) => smallerSize({size, config})",
            [f"{sizes['layers']}x{sizes['hidden']}", config],
        )
        layers, hidden = (int(v) for v in size.split("x"))
        assert (layers, hidden) < (sizes["layers"], sizes["hidden"]), size
        family.target_config(config, TargetSize(layers, hidden))  # refuses a size it cannot make


def test_a_removed_artifacts_page_shows_its_record_and_lineage(site, page, tiny_dir):
    """A lineage drawing links a removed parent: its page shows it, marked removed, with
    what was made from it, until `zoo gc` forgets it; its card and files are not asked
    for (the server no longer serves them)."""
    site.reg.import_checkpoint(tiny_dir("gpt2", seed=5), name="gpt2-gone")
    site.reg.import_checkpoint(tiny_dir("gpt2", seed=6), name="gpt2-tuned")
    site.reg.link("gpt2-tuned", "gpt2-gone")
    site.reg.rm("gpt2-gone")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(site.url + "/#/artifact/gpt2-tuned")
    page.wait_for_selector("#graph svg g.node[data-name='gpt2-gone (removed)']")
    page.click("#graph svg g.node[data-name='gpt2-gone (removed)']")
    page.wait_for_function("() => document.querySelector('h1').innerText === 'gpt2-gone'")
    assert page.locator(".head .badge.removed").inner_text() == "removed"
    page.wait_for_selector("#graph svg g.node[data-name='gpt2-tuned']")
    assert "no longer served" in page.locator("#card").inner_text()
    assert not [u for u in asked if "gpt2-gone/card" in u or "gpt2-gone/files" in u]
    # The library lists it once asked for removed artifacts too; the address keeps the
    # filters, so a reload (or a link shared) shows the same list.
    page.goto(site.url + "/#/?q=gpt2-gone")
    page.wait_for_function("() => document.getElementById('rows').innerText.includes('Nothing')")
    page.check("#all")
    page.wait_for_function("() => document.querySelectorAll('tr.row').length === 1")
    assert page.locator("tr.row .badge.removed").inner_text() == "removed"
    assert page.evaluate("location.hash") == "#/?q=gpt2-gone&all=true"
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('tr.row').length === 1")
    assert page.input_value("#q") == "gpt2-gone" and page.is_checked("#all")
