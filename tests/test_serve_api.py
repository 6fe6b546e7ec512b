"""``zoo serve`` as a client sees it: a real server process on 127.0.0.1, its REST API and
its Hugging Face-compatible downloads, checked against the Registry's own answers and
against transformers loading what it serves."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from tinymodels import copies
from zooserver import ZooServer, client, registry_for, server_env

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_dir):
    home = tmp_path_factory.mktemp("served")
    env = server_env(home)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    tokens = {role: reg.create_token(f"t-{role}", role=role)[1] for role in ("read", "write")}
    server = ZooServer(env, log=home / "server.log").start()
    try:
        yield SimpleNamespace(url=server.url, env=env, reg=reg, tokens=tokens, home=home)
    finally:
        server.stop()
        reg.close()


def _read(served):
    return client(served.url, served.tokens["read"])


def _write(served):
    return client(served.url, served.tokens["write"])


def test_the_openapi_schema_describes_every_endpoint(served):
    paths = client(served.url).get("/openapi.json").json()["paths"]
    for path in (
        "/api/artifacts",
        "/api/artifacts/{name}",
        "/api/artifacts/{name}/lineage",
        "/api/import/upload",
        "/api/extract",
        "/api/materialize",
        "/api/audit",
        "/api/audit/hashes",
        "/api/models/{repo}/revision/{revision}",
        "/{repo}/resolve/{revision}/{filename}",
    ):
        assert path in paths, path


def test_list_search_and_show_answer_what_the_registry_holds(served):
    with _read(served) as http:

        def listed(**params):
            return http.get("/api/artifacts", params=params).json()["artifacts"]

        page = http.get("/api/artifacts").json()
        newest_first = [i.name for i in served.reg.list()][::-1]
        assert [a["name"] for a in page["artifacts"]] == newest_first
        assert page["total"] == len(newest_first) and page["next"] is None
        first = http.get("/api/artifacts", params={"limit": 1}).json()
        rest = listed(after=first["next"], limit=1000) if first["next"] else []
        assert [a["name"] for a in first["artifacts"] + rest] == newest_first
        assert listed(q="TINY-b")[0]["name"] == "tiny-bert"
        assert listed(size="4x32")[0]["size"] == "4x32"
        assert listed(size="2x16", kind="source") == []
        assert listed(family="gpt2") == []
        assert [a["name"] for a in listed(name="tiny-bert")] == ["tiny-bert"]
        assert listed(name="tiny-ber") == []  # exact, unlike q
        shown = http.get("/api/artifacts/tiny-bert").json()
        info = served.reg.show("tiny-bert")
        assert shown["content_hash"] == info.content_hash
        assert len(shown["tensors"]) == len(info.tensors)
        by_hash = http.get(f"/api/artifacts/{info.content_hash[:12]}").json()
        assert by_hash["name"] == "tiny-bert"
        missing = http.get("/api/artifacts/no-such-model")
        assert missing.status_code == 404
        assert missing.json()["error"]["class"] == "NotFoundError"
        assert missing.json()["error"]["exit_code"] == 3
        # NUL, which PostgreSQL cannot take as text: not found without asking the database.
        bad = http.get("/api/artifacts/tiny%00bert")
        assert bad.status_code == 404 and bad.json()["error"]["class"] == "NotFoundError"
        # Quoted and escaped once, as the command line shows a name (repr): 'tiny\x00bert'.
        assert (
            f"named {'tiny' + chr(0) + 'bert'!r} (a name holds no NUL)"
            in bad.json()["error"]["message"]
        )
        pattern = http.get("/api/artifacts", params={"q": "a\x00b"})
        assert pattern.status_code == 400, pattern.text
        assert pattern.json()["error"]["message"].startswith(f"{'a' + chr(0) + 'b'!r} is not")
        bad_kind = http.get("/api/artifacts", params={"kind": "nonsense"})
        assert bad_kind.status_code == 400
        assert bad_kind.json()["error"]["class"] == "InvalidInputError"
        negative = http.get("/api/artifacts", params={"min_layers": -1})  # as the CLI refuses
        assert negative.status_code == 400, negative.text


def test_a_query_parameter_a_route_does_not_take_is_refused_not_ignored(served):
    with _read(served) as http:
        typo = http.get("/api/artifacts", params={"familly": "gpt2"})
        assert typo.status_code == 400, typo.text
        error = typo.json()["error"]
        assert error["class"] == "InvalidInputError" and error["exit_code"] == 2
        assert "'familly'" in error["message"] and "family" in error["message"]
        lineage = http.get("/api/artifacts/tiny-bert/lineage", params={"deep": 2})
        assert lineage.status_code == 400 and "'deep'" in lineage.json()["error"]["message"]
        shown = http.get("/api/artifacts/tiny-bert", params={"verbose": 1})
        assert shown.status_code == 400
        # What the routes take still works, and the Hugging Face routes keep their clients'
        # own parameters.
        assert http.get("/api/artifacts", params={"family": "gpt2"}).json()["artifacts"] == []
        hub = http.get("/api/models/tiny-bert", params={"expand": "sha"})
        assert hub.status_code == 200, hub.text


def test_a_name_look_up_refuses_the_filters_it_would_not_apply(served):
    with _read(served) as http:
        for extra in ({"all": "true"}, {"size": "2x16"}, {"created_by": "nobody"}):
            answer = http.get("/api/artifacts", params={"name": "tiny-bert", **extra})
            assert answer.status_code == 400, (extra, answer.text)
            assert f"{next(iter(extra))}=" in answer.json()["error"]["message"]
        kept = http.get("/api/artifacts", params={"name": "tiny-bert", "kind": "source"})
        assert [a["name"] for a in kept.json()["artifacts"]] == ["tiny-bert"]


def test_a_name_look_up_keeps_a_family_as_a_listing_does(served):
    """family= in any case keeps the same artifacts with name= or alias= as without."""
    with _read(served) as http:
        for family, kept in (("bert", ["tiny-bert"]), ("BERT", ["tiny-bert"]), ("gpt2", [])):
            listed = http.get("/api/artifacts", params={"family": family, "q": "tiny-bert"})
            assert [a["name"] for a in listed.json()["artifacts"]] == kept, family
            looked = http.get("/api/artifacts", params={"family": family, "name": "tiny-bert"})
            assert looked.status_code == 200, looked.text
            assert [a["name"] for a in looked.json()["artifacts"]] == kept, family


def test_writes_over_rest_match_the_registry(served):
    with _write(served) as http:
        lg = http.post("/api/extract", json={"source": "tiny-bert", "wavelet": "haar"})
        assert lg.status_code == 200, lg.text
        same = served.reg.extract("tiny-bert", wavelet="haar")
        assert lg.json()["content_hash"] == same.content_hash  # the same request, once
        made = http.post(
            "/api/materialize", json={"name": same.name, "layers": 2, "hidden": 16}
        ).json()
        local = served.reg.materialize(same.name, layers=2, hidden=16)
        assert made["artifact"]["content_hash"] == local.artifact.content_hash
        assert made["config"] == local.config
        # The weights it serves are the ones a local materialize derives.
        files = http.get(made["files"]).json()["files"]
        blob = http.get(f"{made['files']}/model.safetensors").content
        assert hashlib.sha256(blob).hexdigest() == files["model.safetensors"]["sha256"]
        from safetensors.torch import load

        served_state = load(blob)
        assert set(served_state) == set(local.state_dict)
        for name, t in local.state_dict.items():
            assert served_state[name].equal(t), name
        tagged = http.post(f"/api/artifacts/{same.name}/aliases", json={"alias": "bert-lg"})
        assert tagged.status_code == 200
        assert "bert-lg" in served.reg.show(same.name).aliases
        child = made["artifact"]["name"]
        link = http.post(
            f"/api/artifacts/{child}/links", json={"parent": "tiny-bert", "relation": "distill"}
        )
        assert link.status_code == 200 and link.json()["relation"] == "distill"
        cycle = http.post("/api/artifacts/tiny-bert/links", json={"parent": child})
        assert cycle.status_code == 400 and "cycle" in cycle.json()["error"]["message"]
        removed = http.delete(f"/api/artifacts/{child}")
        assert [a["name"] for a in removed.json()] == [child]
        assert http.get(f"/api/artifacts/{child}").status_code == 404


def test_lineage_in_every_format_is_the_registrys(served):
    lg = served.reg.extract("tiny-bert", wavelet="haar")
    graph = served.reg.lineage(lg.name)
    with _read(served) as http:
        url = f"/api/artifacts/{lg.name}/lineage"
        assert http.get(url).json() == json.loads(json.dumps(graph.to_json(), default=str))
        assert http.get(url, params={"format": "dot"}).text == graph.to_dot()
        assert http.get(url, params={"format": "mermaid"}).text == graph.to_mermaid()
        assert http.get(url, params={"format": "text"}).text == graph.to_text()
        svg = http.get(url, params={"format": "svg"})
        assert svg.headers["content-type"].startswith("image/svg+xml")
        root = ET.fromstring(svg.text)
        names = {g.get("data-name") for g in root.iter("{http://www.w3.org/2000/svg}g")}
        assert {"tiny-bert", lg.name} <= names
        assert http.get(url, params={"format": "png"}).status_code == 400


def test_the_lineage_drawing_places_each_node_after_its_deepest_parent_at_any_depth():
    """Each node one column right of its deepest parent (networkx's longest path to it),
    however long a chain of fine-tunes: 3000 links draw as the 3 do."""
    import random

    import networkx as nx

    from zoo.api.lineage import Lineage, Node
    from zoo.server.svg import GAP_X, PAD, W, lineage_svg

    def drawn(edges: list[tuple[int, int]], count: int) -> dict[str, int]:
        graph = Lineage(root=count - 1)
        for i in reversed(range(count)):  # the root first, as a walk from it finds them
            graph.nodes[i] = Node(i, "source", f"m{i}", None, "0" * 64, False, False)
        graph.edges = [
            SimpleNamespace(parent_id=p, child_id=c, relation="finetune") for p, c in edges
        ]
        svg = ET.fromstring(lineage_svg(graph))
        ns = "{http://www.w3.org/2000/svg}"
        return {
            g.get("data-name"): (int(float(g.find(f"{ns}rect").get("x"))) - PAD) // (W + GAP_X)
            for g in svg.iter(f"{ns}g")
        }

    rng = random.Random(0)
    for count, edges in [
        (3000, [(i - 1, i) for i in range(1, 3000)]),
        *(
            (n, sorted({(rng.randrange(c), c) for c in range(1, n) for _ in range(2)}))
            for n in (12, 40)
        ),
    ]:
        dag = nx.DiGraph(edges)
        dag.add_nodes_from(range(count))
        expected = {
            f"m{k}": nx.dag_longest_path_length(dag.subgraph(nx.ancestors(dag, k) | {k}))
            for k in (range(count) if count < 100 else (0, 1, count - 1))
        }
        columns = drawn(edges, count)
        assert {k: columns[k] for k in expected} == expected, count


def test_the_lineage_drawing_shows_a_parents_first_children_and_counts_the_rest(
    served, tiny_dir, tmp_path
):
    """A base model with ten thousand fine-tunes was drawn as a column of every child
    (6.4 MB, 800,000 px tall): the drawing shows a parent's first 20 children by one
    relation, those the json lists first, then "+N more"; a hidden child's own child is
    not drawn. The json still lists every edge."""
    from zoo.api.lineage import SHOWN_CHILDREN

    parent, *tunes = served.reg.import_checkpoints(copies(tiny_dir("bert"), tmp_path, 32))
    for t in tunes[:30]:
        served.reg.link(t.name, parent.name, relation="finetune")
    served.reg.link(tunes[0].name, parent.name, relation="distill")
    served.reg.link(tunes[30].name, tunes[25].name, relation="finetune")
    ns = "{http://www.w3.org/2000/svg}"
    with _read(served) as http:
        url = f"/api/artifacts/{parent.name}/lineage"
        edges = http.get(url, params={"up": False}).json()["edges"]
        svg = ET.fromstring(http.get(url, params={"format": "svg", "up": False}).text)
    assert len(edges) == 32  # every edge, for scripts
    first = [e["child"] for e in edges if e["relation"] == "finetune"][:SHOWN_CHILDREN]
    kinds = {}
    for g in svg.iter(f"{ns}g"):
        kinds.setdefault(g.get("class"), []).append(g)
    names = {g.get("data-name") for g in kinds["node node-source"]}
    assert names == {parent.name, *first}  # tunes[0] is among them, by distill too
    assert tunes[25].name not in names and tunes[30].name not in names
    (more,) = kinds["more"]
    assert next(more.iter(f"{ns}text")).text == f"+{30 - SHOWN_CHILDREN} more"
    labels = [t.text for t in svg.iter(f"{ns}text") if t.text in ("finetune", "distill")]
    assert sorted(labels) == ["distill"] + ["finetune"] * (SHOWN_CHILDREN + 1)
    rows = (SHOWN_CHILDREN + 1) * (54 + 26)  # the children and their count, one column
    assert float(svg.get("height")) < rows + 24


def test_the_lineage_drawing_draws_the_roots_ancestry_whole():
    """The root's own ancestors are every one drawn, however many children of one parent
    they are (a merge of 25 fine-tunes of one base)."""
    from zoo.api.lineage import Lineage, Node
    from zoo.server.svg import lineage_svg

    graph = Lineage(root=26)
    for i in (26, *range(26)):
        graph.nodes[i] = Node(i, "source", f"m{i}", None, "0" * 64, False, False)
    graph.edges = [
        *(SimpleNamespace(parent_id=0, child_id=c, relation="finetune") for c in range(1, 26)),
        *(SimpleNamespace(parent_id=c, child_id=26, relation="merge") for c in range(1, 26)),
    ]
    svg = ET.fromstring(lineage_svg(graph))
    ns = "{http://www.w3.org/2000/svg}"
    assert {g.get("data-name") for g in svg.iter(f"{ns}g")} == {f"m{i}" for i in range(27)}
    assert len([t for t in svg.iter(f"{ns}text") if t.text == "finetune"]) == 25


def test_concurrent_requests_for_one_size_derive_it_once(served):
    with _write(served) as http:
        before = http.get("/api/stats").json()
        body = {"name": "tiny-bert", "layers": 3, "hidden": 24, "heads": 4}
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: http.post("/api/materialize", json=body), range(8)))
        after = http.get("/api/stats").json()
    assert all(a.status_code == 200 for a in answers), answers[0].text
    assert len({a.json()["artifact"]["content_hash"] for a in answers}) == 1
    # Recorded under the token that asked, not the server's account.
    assert served.reg.show(answers[0].json()["artifact"]["name"]).created_by == "t-write"
    assert after["duplicate_derivations"] == before["duplicate_derivations"] == 0
    assert after["derivations"] - before["derivations"] <= 8
    assert after["distinct_derivations"] == before["distinct_derivations"] + 1


def _tensor_hashes(path):
    """Each tensor's sha256 straight from the safetensors layout (8-byte header length,
    JSON header, data), independently of zoo's reader."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    tensors = [
        {
            "name": name,
            "dtype": h["dtype"],
            "shape": h["shape"],
            "nbytes": h["data_offsets"][1] - h["data_offsets"][0],
            "digest": hashlib.sha256(data[slice(*h["data_offsets"])]).hexdigest(),
        }
        for name, h in header.items()
    ]
    return tensors, meta


def test_audit_by_upload_and_by_posted_hashes(served, tmp_path):
    out = tmp_path / "small"
    made = served.reg.materialize("tiny-bert", layers=2, hidden=16, out=out)
    weights = out / "model.safetensors"
    with _read(served) as http:
        with open(weights, "rb") as fh:
            up = http.post("/api/audit", files=[("files", ("model.safetensors", fh))])
        assert up.status_code == 200, up.text
        assert up.json()["status"] == "known"
        assert up.json()["artifact"]["content_hash"] == made.artifact.content_hash
        tensors, meta = _tensor_hashes(weights)
        config = json.loads((out / "config.json").read_text())
        body = {"label": "small", "tensors": tensors, "config": config, "metadata": meta}
        posted = http.post("/api/audit/hashes", json=body).json()
        assert posted["status"] == "known" and posted["path"] == "small"
        assert posted["lineage"]["root"] == made.artifact.name
        tensors[0]["digest"] = "0" * 64
        changed = http.post("/api/audit/hashes", json={**body, "tensors": tensors}).json()
        assert changed["status"] == "modified" and changed["differing"] == [tensors[0]["name"]]
        bad = http.post("/api/audit/hashes", json={"tensors": [{"name": "x"}]})
        assert bad.status_code == 400
        # An upload the audit refuses is named as the uploader named it, not by the
        # server's staging folder.
        index = {"metadata": {}, "weight_map": {"a.weight": "model-00002-of-00002.safetensors"}}
        parts = [
            ("files", ("config.json", (out / "config.json").read_bytes())),
            ("files", ("model.safetensors.index.json", json.dumps(index).encode())),
        ]
        refused = http.post("/api/audit", files=parts, data={"label": "mine/half"})
        message = refused.json()["error"]["message"]
        assert refused.status_code == 422 and "mine/half/" in message, refused.text
        assert "serve-cache" not in message and ".upload-" not in message
        cut = [("files", ("model.safetensors", weights.read_bytes()[:1000]))]
        refused = http.post("/api/audit", files=cut, data={"label": "mine.safetensors"})
        message = refused.json()["error"]["message"]
        assert refused.status_code == 422 and message.startswith("mine.safetensors "), message
        # No tensors at all is a file nothing shares tensors with, as a local audit says.
        empty = http.post("/api/audit/hashes", json={"tensors": [], "config": None}).json()
        assert empty["status"] == "unknown"
        # A manifest of impossible tensors is refused, not given a verdict (one that may
        # depend on the list's order): with no config, only the tensors say anything.
        first = tensors[1]
        for wrong, says in (
            ([*tensors[1:], {**first, "digest": "b" * 64}], "listed twice"),
            ([{**t, "nbytes": -1} for t in tensors[1:]], "bytes is not what"),
            ([{**t, "shape": [7, 7, 7]} for t in tensors[1:]], "bytes is not what"),
            ([{**t, "dtype": "BOGUS"} for t in tensors[1:]], "not a safetensors dtype"),
        ):
            refused = http.post("/api/audit/hashes", json={"tensors": wrong, "config": None})
            assert refused.status_code == 400, (says, refused.text)
            assert says in refused.json()["error"]["message"], refused.text
        # A posted config is checked as the file's text is: none nests 200 levels deep.
        deep: dict = {}
        for _ in range(200):
            deep = {"x": deep}
        refused = http.post("/api/audit/hashes", json={"tensors": [], "config": deep})
        message = refused.json()["error"]["message"]
        assert refused.status_code == 422 and "nests more than" in message, refused.text


def test_the_web_pages_files_are_checked_with_the_server_on_every_load(served):
    """Without a Cache-Control a browser takes a file with a Last-Modified as fresh for a
    while (RFC 9111, 4.2.2: Chromium for a tenth of its age), so after an upgrade it would
    run the old script against the new server. Each load asks again; an unchanged script
    or style costs a 304, not its bytes."""
    with client(served.url) as http:  # the page loads before any token is pasted
        for path in ("/", "/static/app.js", "/static/app.css"):
            got = http.get(path)
            assert got.status_code == 200, path
            assert got.headers["cache-control"] == "no-cache", path
            if path == "/":  # a kilobyte, sent whole each time
                continue
            again = http.get(path, headers={"If-None-Match": got.headers["etag"]})
            assert again.status_code == 304, path
            assert again.headers["cache-control"] == "no-cache", path


def test_the_web_page_runs_only_its_own_script_and_is_never_framed(served):
    """The page keeps a token that can remove artifacts: its policy lets it run its own
    script and ask its own server only, and refuses to be drawn in another site's frame;
    the lineage SVG, opened on its own, runs nothing."""
    with client(served.url, served.tokens["read"]) as http:
        for path in ("/", "/static/app.js", "/static/app.css", "/static/favicon.svg"):
            got = http.get(path)
            assert got.status_code == 200, path
            policy = dict(
                part.strip().split(" ", 1)
                for part in got.headers["content-security-policy"].split(";")
            )
            assert policy["script-src"] == "'self'" and policy["default-src"] == "'self'"
            assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
            assert got.headers["x-frame-options"] == "DENY"
            assert got.headers["x-content-type-options"] == "nosniff"
        assert 'href="static/favicon.svg"' in http.get("/").text
        svg = http.get("/api/artifacts/tiny-bert/lineage", params={"format": "svg"})
        assert svg.status_code == 200 and svg.text.lstrip().startswith("<svg")
        assert "sandbox" in svg.headers["content-security-policy"]
        assert "script-src" not in svg.headers["content-security-policy"]  # default 'none'


def test_hub_reads_carry_the_headers_huggingface_hub_needs(served):
    info = served.reg.show("tiny-bert")
    with _read(served) as http:
        head = http.head("/tiny-bert/resolve/main/model.safetensors")
        assert head.status_code == 200
        assert head.headers["x-repo-commit"] == info.content_hash[:40]
        body = http.get("/tiny-bert/resolve/main/model.safetensors").content
        assert head.headers["etag"].strip('"') == hashlib.sha256(body).hexdigest()
        assert int(head.headers["content-length"]) == len(body)
        at_commit = http.get(f"/tiny-bert/resolve/{info.content_hash[:40]}/model.safetensors")
        assert at_commit.content == body
        missing = http.head("/tiny-bert/resolve/main/tokenizer.json")
        assert missing.status_code == 404
        assert missing.headers["x-error-code"] == "EntryNotFound"
        assert missing.headers["x-repo-commit"] == info.content_hash[:40]
        assert http.head("/nobody/resolve/main/config.json").headers["x-error-code"] == (
            "RepoNotFound"
        )
        assert http.head("/tiny-bert/resolve/v2/config.json").headers["x-error-code"] == (
            "RevisionNotFound"
        )
        tree = http.get("/api/models/tiny-bert/revision/main").json()
        assert tree["sha"] == info.content_hash[:40]
        assert {s["rfilename"] for s in tree["siblings"]} == {
            "config.json",
            "model.safetensors",
            "README.md",
        }


def test_a_module_folders_files_are_served_under_their_path_as_the_hub_names_them(
    served, tiny_dir, tmp_path
):
    """A sentence-transformers pipeline keeps its modules in folders (1_Pooling/): the
    Hub routes list and serve those files by their path in the folder, the same bytes."""
    import shutil

    folder = tmp_path / "st"
    shutil.copytree(tiny_dir("bert", seed=7), folder)  # not tiny-bert's weights: its own files
    pooling = json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(pooling)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    served.reg.import_checkpoint(folder, name="tiny-st")
    with _read(served) as http:
        tree = http.get("/api/models/tiny-st/revision/main").json()
        assert {"1_Pooling/config.json", "modules.json"} <= {
            s["rfilename"] for s in tree["siblings"]
        }, tree["siblings"]
        got = http.get("/tiny-st/resolve/main/1_Pooling/config.json")
        assert got.status_code == 200 and got.text == pooling, got.text
        assert http.get("/tiny-st/resolve/main/1_Pooling/missing.json").status_code == 404
        # The REST route takes it by its path with the slash quoted, and so does a link.
        listed = http.get("/api/artifacts/tiny-st/files").json()["files"]
        assert "1_Pooling/config.json" in listed
        got = http.get("/api/artifacts/tiny-st/files/1_Pooling%2Fconfig.json")
        assert got.status_code == 200 and got.text == pooling, got.text
        link = http.get("/api/artifacts/tiny-st/files/1_Pooling%2Fconfig.json/link").json()
    with client(served.url, None) as anyone:
        got = anyone.get(link["url"])
        assert got.status_code == 200 and got.text == pooling, got.text


HUB_ID_FROM_PRETRAINED = """
import json, torch
from transformers import AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_pretrained("acme/card")
print(json.dumps({k: v.sum().item() for k, v in model.state_dict().items()}))
"""


def test_a_hub_repository_id_is_served_as_its_last_import(served, tiny_dir, tmp_path):
    """`from_pretrained("ORG/NAME")` pointed at the server gets what was imported from the
    Hub repository ORG/NAME; every route below an artifact takes the id, its slash quoted,
    even where NAME is one of the routes' own words (card)."""
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file

    # tiny-bert's folder, cached as the Hub repository acme/card and imported from there:
    # the same content, so the same artifact with one more import.
    commit = "e" * 40
    repo = Path(os.environ["HF_HUB_CACHE"]) / "models--acme--card"
    shutil.copytree(tiny_dir("bert"), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    info = served.reg.show("tiny-bert")
    assert served.reg.import_checkpoint("acme/card").id == info.id

    with _read(served) as http:
        head = http.head("/acme/card/resolve/main/model.safetensors")
        assert head.status_code == 200, head.text
        assert head.headers["x-repo-commit"] == info.content_hash[:40]
        model = http.get("/api/models/acme/card").json()
        assert (model["id"], model["sha"]) == ("acme/card", info.content_hash[:40])
        at_main = http.get("/api/models/acme/card/revision/main").json()
        assert at_main["siblings"] == model["siblings"]
        tree = http.get("/api/models/acme/card/tree/main").json()
        assert {f["path"] for f in tree} == {s["rfilename"] for s in model["siblings"]}
        sized = http.get("/api/models/acme/card/revision/2x16").json()
        assert served.reg.show(sized["sha"]).config["hidden_size"] == 16
        missing = http.head("/acme/nobody/resolve/main/config.json")
        assert missing.headers["x-error-code"] == "RepoNotFound"
        # Quoted as the client and the web page quote names: the artifact acme/card, not
        # the card of an artifact acme.
        quoted = "acme%2Fcard"
        assert http.get(f"/api/artifacts/{quoted}").json()["name"] == "tiny-bert"
        assert http.get(f"/api/artifacts/{quoted}/lineage").json()["root"] == "tiny-bert"
        files = http.get(f"/api/artifacts/{quoted}/files").json()
        assert files["files"]["config.json"] == model_file(model, "config.json")
        assert http.get(f"/api/artifacts/{quoted}/card").text.startswith("---")
        # Typed with its slash, it reads as the card of an artifact named acme (none).
        assert http.get("/api/artifacts/acme/card").status_code == 404

    sums = _hub_client(served, tmp_path, HUB_ID_FROM_PRETRAINED)
    imported = load_file(tiny_dir("bert") / "model.safetensors")
    assert {k: sums[k] for k in imported} == {k: v.sum().item() for k, v in imported.items()}


def test_a_size_removed_after_it_was_served_is_derived_again(served):
    """The server remembers the sizes it answered; a `zoo rm` of one (in any process)
    makes the next request derive and record it again, not point at a removed row."""
    with _read(served) as http:
        first = http.get("/api/models/tiny-bert/revision/3x16").json()
        made = served.reg.show(first["sha"])
        served.reg.rm(made.name)
        again = http.get("/api/models/tiny-bert/revision/3x16").json()
        assert again["sha"] == first["sha"]  # the same recipe, the same content
        assert served.reg.show(made.name).id == made.id  # recorded again: kept
        got = http.get(f"/tiny-bert/resolve/{again['sha']}/config.json")
        assert got.status_code == 200 and got.json()["num_hidden_layers"] == 3


def test_a_commit_is_served_only_under_its_own_repository(served, tiny_dir):
    """A commit names content; under another repository's name it would load that other
    model silently. The repository's own content, a size made from it and, under a family
    name, that family's models are its commits."""
    other = served.reg.import_checkpoint(tiny_dir("gpt2"), name="other-gpt2")
    with _read(served) as http:
        sized = http.get("/api/models/tiny-bert/revision/2x16").json()["sha"]
        assert http.get(f"/tiny-bert/resolve/{sized}/config.json").status_code == 200
        own = served.reg.show("tiny-bert").content_hash[:40]
        assert http.get(f"/api/models/tiny-bert/revision/{own}").json()["sha"] == own
        assert http.get(f"/api/models/bert/revision/{sized}").status_code == 200
        for repo in ("tiny-bert", "bert"):
            wrong = http.get(f"/api/models/{repo}/revision/{other.content_hash[:40]}")
            assert wrong.status_code == 404, repo
            assert wrong.headers["x-error-code"] == "RevisionNotFound"
            assert "other-gpt2" in wrong.headers["x-error-message"]
        assert http.get(f"/other-gpt2/resolve/{sized}/config.json").status_code == 404


def test_every_error_says_why_in_the_header_huggingface_hub_reads(served, tiny_dir, tmp_path):
    """A HEAD answer has no body: huggingface_hub (and transformers after it) shows only
    X-Error-Message, and tells a missing repository or revision by X-Error-Code. A size
    the model cannot take is a revision not found, with the reason; a placeholder (a
    base_model no one imported) is a repository not found, with the way to import it."""
    import shutil

    folder = tmp_path / "tuned"
    shutil.copytree(tiny_dir("bert", seed=5), folder)
    (folder / "README.md").write_text("---\nbase_model: acme/ghost\n---\n")
    served.reg.import_checkpoint(folder, name="tuned-from-ghost")
    with _read(served) as http:
        bad_size = http.head("/tiny-bert/resolve/2x15/config.json")
        assert bad_size.status_code == 400
        assert bad_size.headers["x-error-code"] == "RevisionNotFound"
        assert "15" in bad_size.headers["x-error-message"]
        ghost = http.head("/acme/ghost/resolve/main/config.json")
        assert (ghost.status_code, ghost.headers["x-error-code"]) == (404, "RepoNotFound")
        assert "zoo import acme/ghost" in ghost.headers["x-error-message"]
        # Any error, and a message that is not ASCII: one ASCII line.
        missing = http.get("/api/artifacts/caf%C3%A9-%E2%86%92")
        assert missing.status_code == 404
        assert missing.headers["x-error-message"].isascii()
        assert "caf" in missing.headers["x-error-message"]
    anonymous = client(served.url).head("/tiny-bert/resolve/main/config.json")
    assert anonymous.status_code == 401 and "ZOO_TOKEN" in anonymous.headers["x-error-message"]


def test_an_error_whose_header_cut_ends_in_a_space_is_answered_whole(served):
    """X-Error-Message is the message's first 300 characters: wherever that cut falls (on
    a space, which no header value may end in), the error is answered, the header holds
    no space at either end, and the body holds the whole message."""
    cut_on_a_space = 0
    with _read(served) as http:
        asked = [f"/api/artifacts/{'a' * n}" for n in range(200, 300)]
        asked += [f"/api/artifacts?after={'a' * n}" for n in range(200, 257)]
        for path in asked:
            answer = http.get(path)
            assert answer.status_code in (400, 404), (path[-20:], answer.status_code)
            message = answer.json()["error"]["message"]
            header = answer.headers["x-error-message"]
            assert header == header.strip() and 0 < len(header) <= 300, path
            assert message.startswith(header) and len(message) >= len(header), path
            cut_on_a_space += len(message) > 300 and message[299] == " "
    assert cut_on_a_space  # the cut did fall on a space


def _hub_client(served, tmp_path, script: str, *, offline: bool = False):
    """What ``script`` prints last (JSON), run as a Hugging Face user pointed at the
    server: online (HF_ENDPOINT, a read token), with an empty cache of its own the first
    time; ``offline``, from that cache alone (HF_HUB_OFFLINE=1)."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    env.update(
        HF_ENDPOINT=served.url,
        HF_TOKEN=served.tokens["read"],
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,  # no local folder named like the repository
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def model_file(model: dict, name: str) -> dict:
    (sibling,) = [s for s in model["siblings"] if s["rfilename"] == name]
    return {"sha256": sibling["lfs"]["sha256"], "size": sibling["size"]}


FROM_PRETRAINED = """
import json, sys, torch
from transformers import AutoModelForMaskedLM
from huggingface_hub import snapshot_download
model = AutoModelForMaskedLM.from_pretrained("tiny-bert", revision="2x32")
ids = torch.tensor([[1, 5, 9, 17, 33, 2]])
with torch.no_grad():
    logits = model(input_ids=ids).logits
folder = snapshot_download("tiny-bert", revision="2x32")
print(json.dumps({"logits": logits.tolist(), "layers": model.config.num_hidden_layers,
                  "folder": folder}))
"""


def test_from_pretrained_with_a_size_as_revision_gets_a_model_no_registry_had(served, tmp_path):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    derived = {i.content_hash for i in served.reg.list(kind="derived", include_deleted=True)}
    got = _hub_client(served, tmp_path, FROM_PRETRAINED)
    assert got["layers"] == 2
    # It was recorded: a derived checkpoint that did not exist before the download.
    now = served.reg.list(kind="derived")
    new = [i for i in now if i.content_hash not in derived]
    assert len(new) == 1 and served.reg.show(new[0].name).config["hidden_size"] == 32
    # The same request materialized locally gives the same logits.
    local = served.reg.materialize("tiny-bert", layers=2, hidden=32)
    assert local.artifact.content_hash == new[0].content_hash
    model = BertForMaskedLM(BertConfig(**local.config)).eval()
    model.load_state_dict(local.state_dict, strict=False)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 5, 9, 17, 33, 2]])).logits
    # Products may round differently with another thread count: the logits agree to
    # float32's precision, and the weights downloaded are the local ones bit for bit.
    assert torch.allclose(logits, torch.tensor(got["logits"]), rtol=1e-5, atol=1e-6)
    from safetensors.torch import load_file

    downloaded = load_file(f"{got['folder']}/model.safetensors")
    assert set(downloaded) == set(local.state_dict)
    assert all(downloaded[k].equal(v) for k, v in local.state_dict.items())
    # The Hub cache names the snapshot by the content hash (the commit the server answered).
    assert got["folder"].endswith(new[0].content_hash[:40])


SENTENCE_TRANSFORMER = """
import json
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("tiny-sbert", revision="2x16", device="cpu")
print(json.dumps(model.encode(["the cat sat on the mat", "dogs"]).tolist()))
"""


def test_sentence_transformers_loads_a_size_of_a_zoo_name_through_the_server(served, tmp_path):
    """SentenceTransformer("NAME") asks the Hub for sentence-transformers/NAME, as it does
    for "all-MiniLM-L6-v2": a zoo name without an organization is served under that id
    too, so the pipeline loads at the size asked, encoding as the same size written with
    --out does, and again offline from the cache it filled."""
    import numpy as np
    import sentence_transformers as st
    from sentence_transformers.sentence_transformer import modules
    from test_catalogue import wordpiece_tokenizer
    from tinymodels import save_tiny

    base = save_tiny("bert", tmp_path / "base", seed=3)
    wordpiece_tokenizer().save_pretrained(base)
    pipeline = [
        modules.Transformer(str(base)),
        modules.Pooling(32, pooling_mode="mean"),
        modules.Normalize(),
    ]
    folder = tmp_path / "tiny-sbert"
    st.SentenceTransformer(modules=pipeline, device="cpu").save(str(folder))
    served.reg.import_checkpoint(folder, name="tiny-sbert")
    local = served.reg.materialize("tiny-sbert", layers=2, hidden=16, out=tmp_path / "out").out
    texts = ["the cat sat on the mat", "dogs"]
    want = st.SentenceTransformer(str(local), device="cpu").encode(texts)

    (tmp_path / "user").mkdir()
    got = np.array(_hub_client(served, tmp_path / "user", SENTENCE_TRANSFORMER))
    assert got.shape == (2, 16) and np.allclose(np.linalg.norm(got, axis=1), 1)
    assert np.allclose(got, want, atol=1e-6)
    again = _hub_client(served, tmp_path / "user", SENTENCE_TRANSFORMER, offline=True)
    assert np.array_equal(np.array(again), got)
    # A name under that organization that names nothing here is refused under its own id.
    with _read(served) as http:
        answer = http.get("/api/models/sentence-transformers/tiny-sbert/revision/2x16")
        assert answer.status_code == 200 and answer.json()["id"].endswith("tiny-sbert")
        answer = http.get("/api/models/sentence-transformers/no-such-model")
        assert answer.status_code == 404, answer.text
        assert "'sentence-transformers/no-such-model'" in answer.json()["error"]["message"]


CARD = """
import json
from huggingface_hub import hf_hub_download
print(json.dumps(open(hf_hub_download("carded", "README.md")).read()))
"""


def test_huggingface_hub_fetches_a_corrected_card_it_had_cached(served, tiny_dir, tmp_path):
    """huggingface_hub keeps a file under the commit it came from: a card corrected by a
    later import is a new commit, so the same cache fetches it (it kept the old one)."""
    import shutil

    folder = tmp_path / "carded"
    shutil.copytree(tiny_dir("gpt2", seed=7), folder)
    (folder / "README.md").write_text("# first card\n")
    served.reg.import_checkpoint(folder, name="carded")
    assert "first card" in _hub_client(served, tmp_path, CARD)
    (folder / "README.md").write_text("# corrected card\n")
    served.reg.import_checkpoint(folder)
    assert "corrected card" in _hub_client(served, tmp_path, CARD)


TEMPLATES = """
import json
from transformers import AutoTokenizer
print(json.dumps(AutoTokenizer.from_pretrained("templated").chat_template))
"""


def test_a_tokenizers_named_chat_templates_load_through_the_server(served, tiny_dir, tmp_path):
    """transformers finds a tokenizer's named chat templates by listing the folder
    additional_chat_templates/ (the Hub's tree of one folder): loaded through the server,
    the tokenizer has every template its folder has. The listing is the Hub's: a folder's
    files and folders, everything below it with recursive=true, EntryNotFound for none."""
    import shutil

    import transformers
    from tokenizers import Tokenizer, models

    folder = tmp_path / "src" / "templated"  # not in the client's folder, which it would read
    shutil.copytree(tiny_dir("llama", seed=7), folder)
    vocab = {"<s>": 0, "a": 1, "b": 2}
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="<s>")),
        eos_token="<s>",
    )
    tok.chat_template = {"default": "{{ messages[0]['content'] }}", "tool_use": "T {{ 1 }}"}
    tok.save_pretrained(folder)
    served.reg.import_checkpoint(folder, name="templated")
    expected = transformers.AutoTokenizer.from_pretrained(folder).chat_template
    assert set(expected) == {"default", "tool_use"}

    with _read(served) as http:
        top = http.get("/api/models/templated/tree/main").json()
        kinds = {e["path"]: e["type"] for e in top}
        assert kinds["additional_chat_templates"] == "directory"
        assert kinds["config.json"] == "file"
        assert not any("/" in path for path in kinds)  # one level, as the Hub lists it
        inside = http.get("/api/models/templated/tree/main/additional_chat_templates").json()
        assert [(e["path"], e["type"]) for e in inside] == [
            ("additional_chat_templates/tool_use.jinja", "file")
        ]
        every = http.get("/api/models/templated/tree/main", params={"recursive": "true"}).json()
        assert "additional_chat_templates/tool_use.jinja" in {e["path"] for e in every}
        missing = http.get("/api/models/templated/tree/main/no_such_folder")
        assert missing.status_code == 404
        assert missing.headers["x-error-code"] == "EntryNotFound"
    assert _hub_client(served, tmp_path, TEMPLATES) == expected
    served.reg.rm("templated")


def test_a_field_the_server_does_not_know_is_refused_not_dropped(served):
    """A request body with a field the endpoint does not take is a 400 naming it, before
    any work: an option silently dropped would answer another question than the one
    asked (a dtype, a shard size)."""
    with _write(served) as http:
        for path, body, unknown in (
            (
                "/api/materialize",
                {"name": "tiny-bert", "layers": 1, "hidden": 8, "shards": 3},
                "shards",
            ),
            ("/api/extract", {"source": "tiny-bert", "levls": 2}, "levls"),
            ("/api/artifacts/tiny-bert/aliases", {"alias": "x", "force": True}, "force"),
        ):
            answer = http.post(path, json=body)
            assert answer.status_code == 400, (path, answer.text)
            error = answer.json()["error"]
            assert error["class"] == "InvalidInputError", error
            assert error["message"] == f"{unknown}: Extra inputs are not permitted", error
    assert "x" not in served.reg.show("tiny-bert").aliases


def test_the_file_cache_keeps_a_folder_per_artifact_and_drops_what_it_cannot_read(tmp_path):
    """At the server's start: a folder named by a bare content hash (no kind, so possibly
    another artifact's card), its file index, pending builds and their outputs' temporary
    folders go; folders keyed by artifact, and anything named otherwise, stay."""
    from zoo.server.work import CACHE_MARK, WRITER_MARK, FileCache, folder_key

    FileCache(tmp_path)  # an empty folder: taken
    digest = "ab" * 32
    info = SimpleNamespace(content_hash=digest, kind="source")
    card = SimpleNamespace(name="README.md", digest="cd" * 32)
    carded = folder_key(info, (card,))
    assert carded.startswith(f"{folder_key(info)}-")  # its stored files' digests end it
    pending = ".pending-" + "1" * 32
    output_temp = f".{pending}.zoo-tmp-0123abcd-42-89abcdef"
    theirs = ["notes", ".pending-list", "report.zoo-old-draft", ".upload-mine"]
    for name in (digest, folder_key(info), carded, pending, output_temp, *theirs):
        (tmp_path / name).mkdir()
    (tmp_path / f"{digest}.files.json").write_text("{}")
    (tmp_path / f"{folder_key(info)}.files.json").write_text("{}")
    (tmp_path / f"{carded}.files.json").write_text("{}")
    removed = FileCache(tmp_path).clean_leftovers()
    assert sorted(removed) == sorted([digest, f"{digest}.files.json", pending, output_temp])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            folder_key(info),
            f"{folder_key(info)}.files.json",
            carded,
            f"{carded}.files.json",
            CACHE_MARK,
            WRITER_MARK,
            *theirs,
        ]
    )


def test_a_cache_built_by_another_zoo_is_built_again(tmp_path):
    """A served folder's bytes depend on the code that wrote its config, card and fitted
    pipeline, not only on its key: after an upgrade (a corrected pooling width) the
    server's start drops the folders other code built, which are then built again, and
    keeps those its own code built. A cache from before the writer was recorded counts
    as other code's; one another running server uses is left to it."""
    from zoo.server.work import WRITER_MARK, FileCache, folder_key, writer

    key = folder_key(SimpleNamespace(content_hash="ab" * 32, kind="derived"))

    def built() -> None:
        (tmp_path / key).mkdir()
        (tmp_path / key / "config.json").write_text("{}")
        (tmp_path / f"{key}.files.json").write_text("{}")

    FileCache(tmp_path).close()
    assert (tmp_path / WRITER_MARK).read_text().strip() == writer()
    built()
    same = FileCache(tmp_path)
    assert same.clean_leftovers() == [] and (tmp_path / key / "config.json").is_file()
    same.close()

    (tmp_path / WRITER_MARK).write_text("0" * 64 + "\n")  # built by another zoo
    running = FileCache(tmp_path)  # its server still runs: its folders are its own
    beside = FileCache(tmp_path)
    assert beside.clean_leftovers() == [] and (tmp_path / key).is_dir()
    running.close()
    beside.close()
    upgraded = FileCache(tmp_path)
    assert upgraded.clean_leftovers() == [key]
    assert not (tmp_path / key).exists() and not (tmp_path / f"{key}.files.json").exists()
    assert (tmp_path / WRITER_MARK).read_text().strip() == writer()
    upgraded.close()

    built()
    (tmp_path / WRITER_MARK).unlink()  # a cache older than the mark
    older = FileCache(tmp_path)
    assert older.clean_leftovers() == [key] and not (tmp_path / key).exists()
    older.close()


def test_the_file_cache_refuses_a_folder_of_the_users(tmp_path):
    """A --cache folder holding files zoo did not write is refused, untouched: the cache
    removes what it takes for a killed server's leftovers."""
    from zoo.errors import InvalidInputError
    from zoo.server.work import CACHE_MARK, FileCache

    names = ["2cf24dba" * 8, ".upload-list.txt", "notes.txt"]
    for name in names:
        (tmp_path / name).write_text("mine")
    with pytest.raises(InvalidInputError, match=r"'\.upload-list\.txt' and no \.zoo-serve-cache"):
        FileCache(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    # Names alone make no folder the cache's: files named by their sha256 (an OCI layout,
    # a Hub cache's blobs), or names a cache writes, without the cache's mark.
    for folder, name in (("oci", "2cf24dba" * 8), ("older", f"{'a' * 64}.derived.files.json")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text("mine")
        with pytest.raises(InvalidInputError, match=f"holds '{name}' and no {CACHE_MARK} mark"):
            FileCache(tmp_path / folder)
        assert [p.name for p in (tmp_path / folder).iterdir()] == [name]
    FileCache(tmp_path / "new").close()
    assert (tmp_path / "new" / CACHE_MARK).is_file()


def test_a_server_starting_beside_another_on_its_cache_leaves_its_builds_alone(tmp_path):
    """What is pending in a cache another running server uses is that server's (a size
    it builds, an upload it imports): a second server's start removes it only once the
    first has stopped."""
    from zoo.server.work import FileCache

    first = FileCache(tmp_path)
    second = FileCache(tmp_path)
    assert second.clean_leftovers() == []  # the first runs
    building = second.pending()  # the second's build, while the first stops
    building.mkdir()
    (building / "config.json").write_text("{}")
    first.close()
    third = FileCache(tmp_path)
    assert third.clean_leftovers() == [] and (building / "config.json").is_file()
    second._in_use.close()  # killed: its build stays, and its hold on the cache goes
    third.close()
    fourth = FileCache(tmp_path)
    assert fourth.clean_leftovers() == [building.name] and not building.exists()
    fourth.close()


def _cached(cache, tmp_path, key: str, size: int, used: float):
    """A complete folder of ``size`` bytes adopted as ``key``, last used at ``used``."""
    built = cache.pending()
    built.mkdir()
    (built / "model.safetensors").write_bytes(b"x" * size)
    cache.adopt(built, key)
    os.utime(cache.root / key, (used, used))
    cache._used.pop(key, None)  # as after a restart: the folder's time is all it knows


def test_a_bounded_file_cache_evicts_the_least_recently_used_folders_only(tmp_path):
    from zoo.server.work import CACHE_MARK, WRITER_MARK, FileCache

    keys = [f"{c * 64}.derived" for c in "abcd"]
    cache = FileCache(tmp_path, limit=250, idle_s=0)
    (tmp_path / "notes").mkdir()  # not the cache's: never evicted, never counted
    (tmp_path / "notes" / "big.bin").write_bytes(b"y" * 10_000)
    (tmp_path / f"{'e' * 64}.txt").write_bytes(b"z" * 10_000)
    now = time.time()
    for i, key in enumerate(keys[:2]):
        _cached(cache, tmp_path, key, 100, now - 1000 + i)
    cache.files(keys[1])  # hashed and indexed
    assert cache.trim() == []  # 200 bytes: under the limit
    assert cache.folder(keys[0]) is not None  # asked for now: the newest
    _cached(cache, tmp_path, keys[2], 100, now - 500)
    # 300 bytes: the least recently used goes, which is keys[1] (keys[0] was just asked for).
    assert cache.folder(keys[1]) is None and not (tmp_path / f"{keys[1]}.files.json").exists()
    assert cache.folder(keys[0]) is not None and cache.folder(keys[2]) is not None
    assert (tmp_path / "notes" / "big.bin").exists() and (tmp_path / f"{'e' * 64}.txt").exists()
    # A folder larger than the limit is kept while it is the one just built.
    _cached(cache, tmp_path, keys[3], 1000, now)
    assert [k for k in keys if cache.folder(k) is not None] == [keys[3]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [keys[3], "notes", f"{'e' * 64}.txt", CACHE_MARK, WRITER_MARK]
    )


def test_a_folder_used_within_the_idle_time_stays_past_the_limit(tmp_path):
    from zoo.server.work import FileCache

    cache = FileCache(tmp_path, limit=1, idle_s=300)
    key = f"{'a' * 64}.source"
    _cached(cache, tmp_path, key, 10, time.time() - 10)
    assert cache.trim() == [] and cache.folder(key) is not None
    os.utime(tmp_path / key, (time.time() - 600, time.time() - 600))
    cache._used.pop(key, None)
    assert cache.trim() == [key] and cache.folder(key) is None


def test_an_unbounded_file_cache_keeps_everything(tmp_path):
    from zoo.server.work import FileCache

    cache = FileCache(tmp_path, idle_s=0)
    _cached(cache, tmp_path, f"{'a' * 64}.source", 10_000, 0.0)
    assert cache.trim() == [] and cache.folder(f"{'a' * 64}.source") is not None


def test_serve_with_a_cache_limit_evicts_stale_folders_at_start_and_serves(tmp_path, tiny_dir):
    env = server_env(tmp_path)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("gpt2"), name="g")
    reg.close()
    cache = tmp_path / "cache"
    stale = cache / f"{'a' * 64}.derived"
    stale.mkdir(parents=True)
    (cache / ".zoo-serve-cache").write_text("")  # a cache an earlier server filled
    (stale / "model.safetensors").write_bytes(b"x" * 5000)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    server = ZooServer(
        env, "--public-read", "--cache", str(cache), "--cache-limit", "1KB", log=tmp_path / "log"
    ).start()
    try:
        assert not stale.exists()
        with client(server.url) as http:
            config = http.get("/api/artifacts/g/files/config.json")
            assert config.status_code == 200, config.text
        assert json.loads(config.content)["model_type"] == "gpt2"
        # Anyone may read this server's files, so a shared cache may keep them too.
        assert config.headers["cache-control"].startswith("public,")
    finally:
        server.stop()
    bad = subprocess.run(
        [sys.executable, "-m", "zoo_cli.main", "serve", "--cache-limit", "lots"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "'lots' is not a size" in bad.stderr


def test_a_family_size_follows_the_default_set_in_another_process(served):
    """`zoo default` run outside the server (the CLI on its host, another replica) moves
    what a bare family name means: the next size asked for comes from the new default,
    not from an answer the server remembers."""
    dwt = served.reg.extract("tiny-bert", method="dwt", wavelet="haar", levels=1)
    dct = served.reg.extract("tiny-bert", method="dct", keep=0.5)
    with _read(served) as http:
        served.reg.set_default("bert", dwt.name)
        first = http.get("/api/models/bert/revision/2x16").json()["sha"]
        served.reg.set_default("bert", dct.name)
        then = http.get("/api/models/bert/revision/2x16").json()["sha"]
    here = served.reg.materialize(dct.name, layers=2, hidden=16).artifact.content_hash
    assert then != first and then == here[:40]


def test_a_size_the_servers_disk_cannot_hold_is_refused_in_the_callers_terms(served):
    """A size revision of several TB is refused before any work (507), saying what it
    would take and what the server has, without the cache's path or the CLI's --out."""
    with _read(served) as http:
        answer = http.get("/api/models/tiny-bert/revision/2000x8192")
    assert answer.status_code == 507, answer.text
    error = answer.json()["error"]
    assert error["class"] == "StorageError"
    assert error["message"].startswith("This checkpoint would take 4.3 TB and the server has ")
    assert "--out" not in error["message"] and str(served.home) not in error["message"]


def test_a_disk_that_fills_during_a_build_is_told_by_kind_and_logged(tiny_dir, monkeypatch, caplog):
    """A build into the cache that passed the check for room, whose disk fills while its
    weights are written (other builds took the room): the caller is told the failure's
    kind (507, exit 11), never the cache's path nor the CLI's --out (the caller named no
    folder); the server's log says which file, once per failure; the next build, with
    room again, serves the files whole and leaves nothing pending."""
    import errno
    import logging

    from starlette.testclient import TestClient

    import zoo
    from zoo.server import create_app

    reg = zoo.connect()
    reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    token = reg.create_token("reader", role="read")[1]
    cache = reg.settings.home / "serve-cache"
    builds = ("/api/artifacts/tiny-bert/files", "/tiny-bert/resolve/2x16/config.json")

    def full(fd, data, offset):  # as a full disk answers a write: no file name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    app = create_app(reg)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with TestClient(app, headers=headers) as http, caplog.at_level(logging.INFO):
            with monkeypatch.context() as patched:
                patched.setattr(os, "pwrite", full)
                answers = [http.get(path) for path in builds]
            for answer in answers:
                assert answer.status_code == 507, answer.text
                assert answer.json()["error"] == {
                    "class": "StorageError",
                    "message": "The server's storage failed: No space left on device.",
                    "status": 507,
                    "exit_code": 11,
                }
            logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(logged) == len(builds), logged
            for line in logged:
                assert line.startswith(f"storage error: Cannot write {cache}/"), line
                assert line.endswith("No space left on device (nothing of it was kept).")
            for path in builds:
                assert http.get(path).status_code == 200, path
    finally:
        reg.close()
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".pending")]


def test_what_stops_a_server_at_start_is_said_in_one_line(served, tmp_path):
    """A port in use, a host that is not this machine's and a database to upgrade are
    zoo's one line and exit code, before the server listens (uvicorn logs a traceback and
    exits 3, zoo's "not found")."""
    import socket

    from zooserver import free_port

    def serve(env, *args):
        cmd = [sys.executable, "-m", "zoo_cli.main", "serve", *args]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stderr

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = str(taken.getsockname()[1])
        code, err = serve(served.env, "--port", port)
    finally:
        taken.close()
    assert (
        code == 4
        and err
        == f"zoo: error: Port {port} on 127.0.0.1 is in use by another "
        "process; choose another with --port.\n"
    ), err
    code, err = serve(served.env, "--host", "192.0.2.1", "--port", str(free_port()))
    assert code == 2 and err.count("\n") == 1 and "not an address of this machine" in err, err
    for bad in (("--port", "70000"), ("--workers", "0")):
        code, err = serve(served.env, *bad)
        assert code == 2 and err.count("\n") == 1 and bad[0] in err, err
    inside = os.path.join(served.env["ZOO_STORE_URL"], "cache")
    code, err = serve(served.env, "--cache", inside, "--port", str(free_port()))
    assert code == 2 and err.count("\n") == 1 and "lies inside the blob store" in err, err
    assert not os.path.exists(inside)
    old = server_env(tmp_path)
    assert subprocess.run([sys.executable, "-m", "zoo_cli.main", "ls"], env=old).returncode == 0
    down = [sys.executable, "-m", "zoo_cli.main", "db", "downgrade", "0009"]
    assert subprocess.run(down, env=old, capture_output=True).returncode == 0
    code, err = serve(old, "--port", str(free_port()))
    assert code == 5 and err.count("\n") == 1 and "run `zoo db upgrade`" in err, err


def test_a_failing_database_is_told_to_callers_by_kind_and_to_the_log_in_full(tmp_path, tiny_dir):
    """A --public-read server's callers may be anyone: they get a database error's kind
    and exit code, and only the server's log its text (host, port, role, SQL)."""
    import sqlite3

    env = server_env(tmp_path)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    reg.close()
    log = tmp_path / "server.log"
    server = ZooServer(env, "--public-read", log=log).start()
    try:
        with sqlite3.connect(tmp_path / "zoo.db") as db:
            db.execute("ALTER TABLE artifacts RENAME TO artifacts_moved")
        with client(server.url, None) as http:
            answer = http.get("/api/artifacts")
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["class"] == "DatabaseUnavailableError" and error["exit_code"] == 9
        assert "artifacts" not in error["message"] and "log says why" in error["message"]

        # A schema taken back under the running server (checked when it started) is
        # told as the schema, exit 5 as every command says it, not as a failing database.
        with sqlite3.connect(tmp_path / "zoo.db") as db:
            db.execute("ALTER TABLE artifacts_moved RENAME TO artifacts")
        down = [sys.executable, "-m", "zoo_cli.main", "db", "downgrade", "0009"]
        done = subprocess.run(down, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        with client(server.url, None) as http:
            answer = http.get("/api/aliases/prod")
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["class"] == "SchemaOutdatedError" and error["exit_code"] == 5, error
        told = (
            "The server's database schema changed while it ran; it is now out of date: run "
            "`zoo db upgrade`, where the server runs. The server answers again by itself "
            "once the schema is its zoo's."
        )
        assert error["message"] == told
        # A route whose tables did not change fails once the server checks the schema
        # again (every few seconds): told alike, not as the local command's own words.
        deadline = time.monotonic() + 15
        with client(server.url, None) as http:
            while (answer := http.get("/api/artifacts")).status_code == 200:
                assert time.monotonic() < deadline, "the schema was not checked again"
                time.sleep(0.5)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["message"] == told
        # Upgraded where the server runs, it answers again, without a restart.
        up = [sys.executable, "-m", "zoo_cli.main", "db", "upgrade"]
        done = subprocess.run(up, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        with client(server.url, None) as http:
            while (answer := http.get("/api/artifacts")).status_code != 200:
                assert time.monotonic() < deadline + 15, answer.text
                time.sleep(0.5)
    finally:
        server.stop()
    # One entry per failure, the handler's, each one line: a database error is expected,
    # and its traceback would repeat, request after request, what the line says.
    written = log.read_text()
    assert "no such table: artifacts" in written
    assert written.count("database error: ") == 2 and "Traceback" not in written, written
    lines = [line for line in written.splitlines() if "database error: " in line]
    assert all("OperationalError: no such table" in line for line in lines), lines
    assert "SELECT" not in written and "[parameters" not in written, written  # the driver's words


def test_an_unreachable_object_store_is_told_by_kind_as_a_local_command_exits(
    s3_store_url, s3_server, tiny_dir, monkeypatch, caplog
):
    """A server whose S3 endpoint stops answering, or whose bucket is gone: its callers
    get the failure's kind and the exit code a local command gives (11), not an internal
    error (exit 1), nor the server's store URL with advice to fix a ZOO_STORE_URL they do
    not have; the endpoint, bucket and key are in the server's log, one line per
    failure, no trace."""
    import logging

    import boto3
    from starlette.testclient import TestClient

    import zoo
    from zoo.server import create_app

    reg = zoo.connect(store_url=s3_store_url)
    reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    tokens = {role: reg.create_token(role, role=role)[1] for role in ("read", "admin")}
    reg.close()
    bucket = s3_store_url.split("/")[2]
    asked = {
        "read": ("GET", "/api/artifacts/tiny-bert/files", "127.0.0.1:1"),
        "admin": ("POST", "/api/verify", bucket),
    }
    for role, (method, path, logged) in asked.items():
        with monkeypatch.context() as patched:
            if role == "read":  # nothing listens there
                patched.setenv("ZOO_S3_ENDPOINT_URL", "http://127.0.0.1:1")
            else:
                s3 = boto3.resource("s3", endpoint_url=s3_server).Bucket(bucket)
                s3.objects.all().delete()
                s3.delete()
            reg = zoo.connect(store_url=s3_store_url)
            app = create_app(reg)
            headers = {"Authorization": f"Bearer {tokens[role]}"}
            caplog.clear()
            try:
                with TestClient(app, headers=headers) as http, caplog.at_level(logging.INFO):
                    answer = http.request(method, path, json={} if method == "POST" else None)
            finally:
                reg.close()
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == {
            "class": "StoreUnavailableError",
            "message": "The server's object store failed; the server's log says why.",
            "status": 503,
            "exit_code": 11,
        }
        (entry,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert entry.getMessage().startswith("object store error: "), entry.getMessage()
        assert logged in entry.getMessage() and not entry.exc_info


def test_an_unexpected_failure_is_answered_and_logged_once_with_its_traceback(caplog):
    """A failure of the server's own (a bug) is answered 500 in zoo's error body and
    logged once with its traceback; nothing is raised past the app, which the ASGI server
    would log again."""
    import logging

    from starlette.testclient import TestClient

    import zoo
    from zoo.server import create_app

    reg = zoo.connect()
    app = create_app(reg)

    @app.get("/api/broken")
    async def broken():
        raise RuntimeError("a bug")

    try:
        with TestClient(app, raise_server_exceptions=True) as http, caplog.at_level(logging.INFO):
            answer = http.get("/api/broken")
    finally:
        reg.close()
    assert answer.status_code == 500
    assert answer.json()["error"] == {
        "class": "ZooError",
        "message": "Internal error (RuntimeError); the server's log has its trace.",
        "status": 500,
        "exit_code": 1,
    }
    (entry,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert entry.getMessage() == "unexpected error on GET /api/broken"
    assert entry.exc_info and isinstance(entry.exc_info[1], RuntimeError)


def test_a_size_request_is_one_derivation_and_its_failures_carry_the_hubs_codes(served):
    """A Hub size revision and the REST body for the same size are one derivation (the
    body's defaults mean "zoo decides"); a family with nothing to make a size from, or a
    size the disk cannot hold, carries X-Error-Code (without it huggingface_hub says
    "check your connection"); a missing token names HF_TOKEN, which the Hub's clients read."""
    with _read(served) as http:
        http.get("/tiny-bert/resolve/6x32/config.json").raise_for_status()
        before = http.get("/api/stats").json()["derivations"]
    with client(served.url, served.tokens["write"]) as http:
        made = http.post("/api/materialize", json={"name": "tiny-bert", "layers": 6, "hidden": 32})
        assert made.status_code == 200, made.text
        assert http.get("/api/stats").json()["derivations"] == before
    with _read(served) as http:
        for path in ("/llama/resolve/2x16/config.json", "/tiny-bert/resolve/2000x8192/config.json"):
            answer = http.head(path)
            assert answer.status_code >= 400 and answer.headers["x-error-code"] == (
                "RevisionNotFound"
            ), (path, answer.status_code)
    with client(served.url, None) as http:
        refused = http.get("/tiny-bert/resolve/main/config.json")
    assert refused.status_code == 401 and "HF_TOKEN" in refused.json()["error"]["message"]


def test_one_commit_names_one_set_of_files_and_a_corrected_card_is_served(tmp_path, tiny_dir):
    """One commit names one set of files (huggingface_hub caches by commit): a model's own
    size is its main files, not the derived record's card and metadata; a card imported
    again is served, not a cached one; a family name a default is set for takes the
    commits of its sizes also where another model has the name."""
    import shutil

    env = server_env(tmp_path)
    reg = registry_for(env)
    src = reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    lg = reg.extract(src.name, method="dwt", wavelet="haar", levels=1)
    reg.import_checkpoint(tiny_dir("bert", seed=1), name="bert")  # unrelated to lg
    reg.set_default("bert", lg.name)
    token = reg.create_token("reader", role="read")[1]
    server = ZooServer(env, log=tmp_path / "server.log").start()
    try:
        with client(server.url, token) as http:
            main, own = (
                {
                    f: http.head(f"/tiny-bert/resolve/{rev}/{f}").headers["etag"]
                    for f in ("model.safetensors", "README.md")
                }
                for rev in ("main", "4x32")
            )
            assert own == main
            smaller = http.get("/tiny-bert/resolve/2x16/README.md")
            assert smaller.status_code == 200 and "license: mit" not in smaller.text
            carded = tmp_path / "carded"
            shutil.copytree(tiny_dir("bert"), carded)
            (carded / "README.md").write_text("---\nlicense: mit\n---\n# corrected card\n")
            before = http.head("/tiny-bert/resolve/main/config.json").headers["x-repo-commit"]
            reg.import_checkpoint(carded)
            card = http.get("/tiny-bert/resolve/main/README.md")
            assert card.status_code == 200 and "corrected card" in card.text
            # New files, a new commit (huggingface_hub keeps what it fetched under one):
            # the content hash's first 28 digits, then 12 of the side files'.
            commit = card.headers["x-repo-commit"]
            assert commit != before and commit[:28] == src.content_hash[:28]
            assert http.get(f"/api/models/tiny-bert/revision/{commit}").json()["sha"] == commit
            (carded / "README.md").write_text("---\nlicense: mit\n---\n# corrected again\n")
            reg.import_checkpoint(carded)
            gone = http.get(f"/tiny-bert/resolve/{commit}/README.md")
            assert gone.status_code == 404, gone.text
            assert gone.headers["x-error-code"] == "RevisionNotFound"
            assert "replaced by a later import" in gone.json()["error"]["message"]
            now = http.get("/tiny-bert/resolve/main/README.md")
            assert "corrected again" in now.text and now.headers["x-repo-commit"] != commit
            assert (
                "corrected again"
                in http.get(f"/tiny-bert/resolve/{now.headers['x-repo-commit']}/README.md").text
            )
            # A size derived before the correction takes the source's license now: its
            # folder is built again, not served from the cache.
            smaller = http.get("/tiny-bert/resolve/2x16/README.md")
            assert smaller.status_code == 200 and "license: mit" in smaller.text
            sha = http.get("/api/models/bert/revision/2x16").json()["sha"]
            config = http.get(f"/bert/resolve/{sha}/config.json")
            assert config.status_code == 200, config.text
            assert config.json()["num_hidden_layers"] == 2
    finally:
        server.stop()
        reg.close()


def test_ranges_are_served_ignored_or_refused_in_zoos_error_body(served, tiny_dir, tmp_path):
    """huggingface_hub resumes a download with a Range: a malformed one or another unit is
    ignored and the file sent (RFC 9110), the ranges in the file are served and those past
    its end dropped, and a request for nothing in the file is a 416 in zoo's error body,
    as every error is."""
    with _read(served) as http:
        whole = http.get("/tiny-bert/resolve/main/config.json")
        size = len(whole.content)
        part = http.get("/tiny-bert/resolve/main/config.json", headers={"Range": "bytes=2-9"})
        assert part.status_code == 206 and part.content == whole.content[2:10]
        tail = http.get("/tiny-bert/resolve/main/config.json", headers={"Range": "bytes=-5"})
        assert tail.status_code == 206 and tail.content == whole.content[-5:]
        for ignored in ("bytes=abc", "bytes=9-2", "items=0-2", "bytes=-", "bytes=1-2,x"):
            answer = http.get("/tiny-bert/resolve/main/config.json", headers={"Range": ignored})
            assert answer.status_code == 200 and answer.content == whole.content, ignored
        etag, commit = whole.headers["etag"], whole.headers["x-repo-commit"]
        # A range in the file beside ones past its end: the satisfiable part is served.
        for mixed, (first, last) in (
            (f"bytes=0-0,{size + 31}-{size + 131}", (0, 0)),
            ("bytes=0-0,-0", (0, 0)),
            (f"bytes={size}-,3-7", (3, 7)),
            (f"bytes=-0, -4, {size}-{size}", (size - 4, size - 1)),
        ):
            answer = http.get("/tiny-bert/resolve/main/config.json", headers={"Range": mixed})
            assert answer.status_code == 206, (mixed, answer.status_code)
            assert answer.headers["content-range"] == f"bytes {first}-{last}/{size}", mixed
            assert answer.content == whole.content[first : last + 1], mixed
            assert (answer.headers["etag"], answer.headers["x-repo-commit"]) == (etag, commit)
        two = http.get(
            "/tiny-bert/resolve/main/config.json", headers={"Range": f"bytes=0-1,{size}-,4-5"}
        )
        assert two.status_code == 206 and two.headers["content-type"].startswith(
            "multipart/byteranges"
        )
        assert f"bytes 0-1/{size}" in two.text and f"bytes 4-5/{size}" in two.text
        for past in (
            f"bytes={size}-",
            f"bytes={size + 10}-{size + 20}",
            "bytes=-0",
            f"bytes=-0,{size}-{size + 5}",
        ):
            answer = http.get("/tiny-bert/resolve/main/config.json", headers={"Range": past})
            assert answer.status_code == 416, (past, answer.status_code)
            assert answer.headers["content-range"] == f"bytes */{size}"
            assert (answer.headers["etag"], answer.headers["x-repo-commit"]) == (etag, commit)
            assert answer.json()["error"]["class"] == "ZooError"
        # An If-Range that is not the file's ETag asks for the whole file (RFC 9110).
        for validator, status in ((etag, 416), ('"deadbeef"', 200)):
            answer = http.get(
                "/tiny-bert/resolve/main/config.json",
                headers={"Range": f"bytes={size}-", "If-Range": validator},
            )
            assert answer.status_code == status, validator
        stale = http.get(
            "/tiny-bert/resolve/main/config.json",
            headers={"Range": "bytes=2-9", "If-Range": '"deadbeef"'},
        )
        assert stale.status_code == 200 and stale.content == whole.content
    # An empty file holds no range: zoo's 416, not the file server's bare one.
    import shutil

    shutil.copytree(tiny_dir("bert", seed=8), tmp_path / "empty-license")  # not tiny-bert
    (tmp_path / "empty-license" / "LICENSE").write_bytes(b"")
    served.reg.import_checkpoint(tmp_path / "empty-license", name="tiny-empty-license")
    with _read(served) as http:
        for asked in ("bytes=-5", "bytes=0-0,-3", "bytes=0-"):
            answer = http.get("/tiny-empty-license/resolve/main/LICENSE", headers={"Range": asked})
            assert answer.status_code == 416, (asked, answer.status_code)
            assert answer.headers["content-range"] == "bytes */0", asked
            assert answer.json()["error"]["class"] == "ZooError", asked


HUB_REFS = """
import json
from huggingface_hub import HfApi
api = HfApi()
refs = api.list_repo_refs("tiny-bert")
api.auth_check("tiny-bert")
try:
    api.auth_check("no-such-model")
    missing = "none"
except Exception as exc:
    missing = type(exc).__name__
print(json.dumps({"branches": [[b.name, b.target_commit] for b in refs.branches],
                  "tags": len(refs.tags), "missing": missing}))
"""


def test_huggingface_hub_lists_the_refs_and_checks_access_of_a_served_model(served, tmp_path):
    """list_repo_refs and auth_check have routes of their own, before the ORG/NAME routes,
    which would look up a Hub id `tiny-bert/refs`."""
    got = _hub_client(served, tmp_path, HUB_REFS)
    main = served.reg.show("tiny-bert").content_hash[:40]
    assert got == {"branches": [["main", main]], "tags": 0, "missing": "RepositoryNotFoundError"}


PIPELINES = """
import json
from transformers import pipeline
from huggingface_hub import HfApi
got = {}
for name in ("pipe-bert", "pipe-gpt2", "pipe-sbert"):
    got[name] = {"tag": HfApi().model_info(name).pipeline_tag}
    try:
        pipe = pipeline(model=name, revision="2x16", device="cpu")
    except RuntimeError as exc:
        got[name]["refused"] = str(exc)
        pipe = pipeline("feature-extraction", model=name, revision="2x16", device="cpu")
    got[name]["task"] = pipe.task
    if pipe.task == "fill-mask":
        got[name]["out"] = pipe("the cat [MASK] on the mat", top_k=3)
    elif pipe.task == "text-generation":
        got[name]["out"] = pipe("ab", max_new_tokens=4, do_sample=False)
    else:
        got[name]["out"] = pipe("the cat sat")
print(json.dumps(got))
"""


def test_a_pipeline_without_a_task_takes_the_hubs_pipeline_tag(served, tiny_dir, tmp_path):
    """transformers' pipeline(model=NAME) asks model_info for the task: its pipeline_tag
    is the card's when it states one, else the architecture's by transformers' own table
    (BertForMaskedLM fill-mask, GPT2LMHeadModel text-generation), as the Hub's. Each
    pipeline then loads the size asked for and answers as the same size written with
    --out does; a sentence-transformers card's library is refused in transformers' words,
    as it is for such a model on the Hub, and its feature-extraction pipeline runs."""
    import shutil

    import numpy as np
    import sentence_transformers as st
    import transformers
    from sentence_transformers.sentence_transformer import modules
    from test_catalogue import bpe_tokenizer, wordpiece_tokenizer

    src = tmp_path / "src"
    bert, gpt2 = src / "pipe-bert", src / "pipe-gpt2"
    shutil.copytree(tiny_dir("bert", seed=5), bert)
    wordpiece_tokenizer().save_pretrained(bert)
    shutil.copytree(tiny_dir("gpt2", seed=5), gpt2)
    bpe_tokenizer().save_pretrained(gpt2)
    pipeline_modules = [
        modules.Transformer(str(bert)),
        modules.Pooling(32, pooling_mode="mean"),
        modules.Normalize(),
    ]
    st.SentenceTransformer(modules=pipeline_modules, device="cpu").save(str(src / "pipe-sbert"))
    for name in ("pipe-bert", "pipe-gpt2", "pipe-sbert"):
        served.reg.import_checkpoint(src / name, name=name)

    (tmp_path / "user").mkdir()
    got = _hub_client(served, tmp_path / "user", PIPELINES)
    assert {name: (g["tag"], g["task"]) for name, g in got.items()} == {
        "pipe-bert": ("fill-mask", "fill-mask"),
        "pipe-gpt2": ("text-generation", "text-generation"),
        "pipe-sbert": ("sentence-similarity", "feature-extraction"),
    }
    assert "refused" not in got["pipe-bert"] and "refused" not in got["pipe-gpt2"]
    assert "meant to be used with sentence-transformers" in got["pipe-sbert"]["refused"]
    for name, g in got.items():
        out = served.reg.materialize(name, layers=2, hidden=16, out=tmp_path / name).out
        local = transformers.pipeline(g["task"], model=str(out), device="cpu")
        if g["task"] == "fill-mask":
            want = local("the cat [MASK] on the mat", top_k=3)
            assert [w["token"] for w in want] == [o["token"] for o in g["out"]]
            assert np.allclose([w["score"] for w in want], [o["score"] for o in g["out"]])
        elif g["task"] == "text-generation":
            assert local("ab", max_new_tokens=4, do_sample=False) == g["out"]
        else:
            assert np.allclose(local("the cat sat"), g["out"], atol=1e-6)


HUB_READS = """
import json
from huggingface_hub import HfApi
api = HfApi()
def error(call):
    try:
        call()
    except Exception as exc:
        return [type(exc).__name__, getattr(exc.response, "status_code", None), str(exc)]
    return None
paths = api.get_paths_info("tiny-bert", ["config.json", "nope.json", "model.safetensors"],
                           revision="2x16", expand=True)
commits = {rev: [[c.commit_id, c.title, c.authors]
                 for c in api.list_repo_commits("tiny-bert", revision=rev)]
           for rev in ("main", "2x16")}
expanded = api.model_info("carded-tag", revision="2x16", expand=["pipeline_tag", "sha"])
info = api.model_info("carded-tag")
print(json.dumps({
    "paths": [[p.path, p.size, p.lfs.sha256, p.last_commit.oid] for p in paths],
    "commits": commits,
    "whoami": api.whoami(),
    "expanded": [expanded.pipeline_tag, expanded.sha, expanded.siblings, expanded.tags],
    "carded": [info.pipeline_tag, info.transformers_info.pipeline_tag,
               info.transformers_info.auto_model, info.card_data.license],
    "no_commits": error(lambda: api.list_repo_commits("tiny-bert", revision="v9")),
    "create_repo": error(lambda: api.create_repo("new-model")),
    "upload": error(lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt",
                                            repo_id="tiny-bert")),
}))
"""


def test_huggingface_hubs_reads_of_paths_commits_and_the_user_answer(served, tiny_dir, tmp_path):
    """get_paths_info (a POSTed form of paths), list_repo_commits (a revision's one
    commit: zoo's commits are contents, with no history), whoami (the token), and
    model_info(expand=[...]) (those properties alone) answer in the Hub's shapes; the
    Hub's writes are refused in one line, 405."""
    import shutil

    folder = tmp_path / "carded-tag"
    shutil.copytree(tiny_dir("bert", seed=6), folder)
    (folder / "README.md").write_text("---\nlicense: mit\npipeline_tag: feature-extraction\n---\n")
    served.reg.import_checkpoint(folder, name="carded-tag")
    got = _hub_client(served, tmp_path, HUB_READS)

    main = served.reg.show("tiny-bert")
    size = served.reg.materialize("tiny-bert", layers=2, hidden=16).artifact
    files = {}
    with _read(served) as http:
        for s in http.get("/api/models/tiny-bert/revision/2x16").json()["siblings"]:
            files[s["rfilename"]] = [s["size"], s["lfs"]["sha256"]]
    commit = got["paths"][0][3]
    assert commit == size.content_hash[:40]
    assert got["paths"] == [
        ["config.json", *files["config.json"], commit],
        ["model.safetensors", *files["model.safetensors"], commit],
    ]
    assert got["commits"] == {
        "main": [[main.content_hash[:40], "tiny-bert (source)", [main.created_by]]],
        "2x16": [[commit, f"{size.name} (derived)", [size.created_by]]],
    }
    assert got["whoami"]["name"] == "t-read"
    assert got["whoami"]["auth"]["accessToken"]["role"] == "read"
    # Only what expand asked for. A size's card is zoo's, which states no pipeline_tag:
    # the architecture's; at main the card's own tag wins over it.
    assert got["expanded"][0] == "fill-mask" and got["expanded"][2:] == [None, None]
    assert got["carded"] == ["feature-extraction", "fill-mask", "AutoModelForMaskedLM", "mit"]
    assert got["no_commits"][:2] == ["RevisionNotFoundError", 404]
    for refused in (got["create_repo"], got["upload"]):
        assert refused[1] == 405, refused
        assert "zoo serve takes no writes through the Hub's API" in refused[2]
