"""A lineage graph as SVG: layered left to right (each node one column right of its
deepest parent), nodes that link to their pages, edges labelled with their relation, a
parent's first few children by one relation and a node counting the rest. Drawn here so
the web page needs no graph library."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from zoo.api.lineage import SHOWN_CHILDREN

W, H, GAP_X, GAP_Y, PAD = 210, 54, 70, 26, 12
COLORS = {
    "source": ("#e8f0fe", "#1a56db"),
    "learngene": ("#e6f6ec", "#15803d"),
    "derived": ("#fff4e5", "#c2410c"),
    "origin": ("#f3f4f6", "#6b7280"),
    "placeholder": ("#ffffff", "#9ca3af"),  # a base_model named by a card, not imported
    "more": ("#ffffff", "#6b7280"),  # a parent's children past the first SHOWN_CHILDREN
}


def _short(text: str, n: int = 25) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _columns(nodes, edges) -> dict[str, int]:
    """Each node's column: the longest path to it from a node without parents. Parents
    first, in a loop rather than by recursion: a chain of fine-tunes may be thousands of
    edges long. The graph is acyclic; were it not, a node on a cycle goes one column right
    of its parents placed so far."""
    parents: dict[str, list[str]] = {k: [] for k in nodes}
    children: dict[str, list[str]] = {k: [] for k in nodes}
    for p, c, _ in edges:
        parents[c].append(p)
        children[p].append(c)
    waiting = {k: len(v) for k, v in parents.items()}
    column: dict[str, int] = {}
    ready = [k for k, n in waiting.items() if n == 0]
    while len(column) < len(nodes):
        if not ready:  # only a cycle is left
            ready = [next(k for k in nodes if k not in column)]
        k = ready.pop()
        if k in column:
            continue
        column[k] = 1 + max((column[p] for p in parents[k] if p in column), default=-1)
        for c in children[k]:
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
    return column


def _reach(start: int, step: dict[int, list[int]]) -> set[int]:
    """``start`` and every node reached from it through ``step``."""
    seen, frontier = {start}, [start]
    while frontier:
        for k in step.get(frontier.pop(), ()):
            if k not in seen:
                seen.add(k)
                frontier.append(k)
    return seen


def _shown(graph) -> tuple[list, dict[tuple[int, str], int], set[int]]:
    """The edges drawn, how many more each (parent, relation) has, and the nodes drawn.

    A base model fine-tuned ten thousand times drew a column of every child, 800,000 px
    tall: each parent shows its first SHOWN_CHILDREN children by one relation, as the text
    form names them; the root's ancestry is drawn whole. A node is drawn while a drawn edge
    still joins it to the root: a hidden child's descendants are in its parent's count."""
    parents: dict[int, list[int]] = {}
    for e in graph.edges:
        parents.setdefault(e.child_id, []).append(e.parent_id)
    ancestry = _reach(graph.root, parents)
    counted: dict[tuple[int, str], int] = {}
    shown = []
    for e in graph.edges:
        if e.child_id in ancestry:
            shown.append(e)
            continue
        n = counted[e.parent_id, e.relation] = counted.get((e.parent_id, e.relation), 0) + 1
        if n <= SHOWN_CHILDREN:
            shown.append(e)
    joined: dict[int, list[int]] = {}
    for e in shown:
        joined.setdefault(e.parent_id, []).append(e.child_id)
        joined.setdefault(e.child_id, []).append(e.parent_id)
    drawn = _reach(graph.root, joined)
    more = {
        key: n - SHOWN_CHILDREN
        for key, n in counted.items()
        if n > SHOWN_CHILDREN and key[0] in drawn
    }
    return [e for e in shown if e.parent_id in drawn], more, drawn


def lineage_svg(graph, link: str = "#/artifact/{name}") -> str:
    """An SVG document of ``graph`` (a :class:`zoo.api.lineage.Lineage`)."""
    shown, more, drawn = _shown(graph)
    nodes: dict[str, dict] = {}
    for n in graph.nodes.values():
        if n.id not in drawn:
            continue
        nodes[f"n{n.id}"] = {
            "label": n.label,
            "kind": n.kind,
            "sub": f"{n.kind}{' · virtual' if n.virtual else ''}"
            + (f" · {n.family}" if n.family else ""),  # a placeholder has none
            # A removed artifact's page shows it too, until `zoo gc` forgets it.
            "href": link.format(name=quote(n.name)),
            "dashed": n.virtual,
            "root": n.id == graph.root,
            "faded": n.deleted,
        }
    edges = [(f"n{e.parent_id}", f"n{e.child_id}", e.relation) for e in shown]
    for (parent, relation), n in more.items():
        key = f"m{parent}_{relation}"
        nodes[key] = {
            "label": f"+{n} more",
            "kind": "more",
            "sub": f"{relation} · the json lists all",
            "href": None,
            "dashed": True,
            "root": False,
            "faded": False,
        }
        edges.append((f"n{parent}", key, relation))
    for node_id, imps in graph.imports.items():
        if node_id not in drawn:
            continue
        for j, imp in enumerate(imps):
            key = f"o{node_id}_{j}"
            origin = imp.origin.removeprefix("hf://")
            nodes[key] = {
                "label": origin.rsplit("/", 1)[-1]
                if not imp.origin.startswith("hf://")
                else origin,
                "kind": "origin",
                "sub": "hub" if imp.origin.startswith("hf://") else "folder",
                "href": None,
                "dashed": False,
                "root": False,
                "faded": False,
            }
            edges.append((key, f"n{node_id}", "import"))

    column = _columns(nodes, edges)
    rows: dict[int, list[str]] = {}
    for k in sorted(nodes, key=lambda k: (column[k], k[0] != "o", k[0] == "m", k)):
        rows.setdefault(column[k], []).append(k)
    pos = {}
    for col, keys in rows.items():
        for i, k in enumerate(keys):
            pos[k] = (PAD + col * (W + GAP_X), PAD + i * (H + GAP_Y))
    width = PAD * 2 + (max(rows) + 1) * (W + GAP_X) - GAP_X
    height = PAD * 2 + max(len(v) for v in rows.values()) * (H + GAP_Y) - GAP_Y

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="lineage" role="img" '
        'font-family="system-ui, -apple-system, Segoe UI, sans-serif">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#9ca3af"/></marker></defs>',
    ]
    for p, c, relation in edges:
        (x1, y1), (x2, y2) = pos[p], pos[c]
        x1, y1, x2, y2 = x1 + W, y1 + H / 2, x2, y2 + H / 2
        mx = (x1 + x2) / 2
        out.append(
            f'<path d="M{x1},{y1} C{mx},{y1} {mx},{y2} {x2 - 2},{y2}" fill="none" '
            'stroke="#9ca3af" stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
        out.append(
            f'<text x="{mx}" y="{(y1 + y2) / 2 - 6}" text-anchor="middle" font-size="11" '
            f'fill="#6b7280">{escape(relation)}</text>'
        )
    for k, n in nodes.items():
        x, y = pos[k]
        fill, stroke = COLORS.get(n["kind"], COLORS["origin"])
        dash = ' stroke-dasharray="5 3"' if n["dashed"] else ""
        width_ = 3 if n["root"] else 1.5
        opacity = ' opacity="0.5"' if n["faded"] else ""
        # A count of hidden children is no artifact: not a node, no name.
        group = (
            '<g class="more">'
            if n["kind"] == "more"
            else f'<g class="node node-{n["kind"]}" data-name="{escape(n["label"])}"{opacity}>'
        )
        box = (
            f"{group}<title>{escape(n['label'])}</title>"
            f'<rect x="{x}" y="{y}" width="{W}" height="{H}" rx="8" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{width_}"{dash}/>'
            f'<text x="{x + 12}" y="{y + 22}" font-size="13" font-weight="600" '
            f'fill="#111827">{escape(_short(n["label"]))}</text>'
            f'<text x="{x + 12}" y="{y + 40}" font-size="11" fill="{stroke}">'
            f"{escape(_short(n['sub'], 36))}</text></g>"
        )
        if n["href"]:
            box = f'<a href="{escape(n["href"])}" class="node-link">{box}</a>'
        out.append(box)
    out.append("</svg>")
    return "\n".join(out)
