"""Lineage: ancestors and descendants through typed edges, and user-declared links."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from zoo.db.entities import ArtifactInfo, EdgeInfo, ImportInfo
from zoo.errors import InvalidInputError, VerificationError
from zoo.text import printable

if TYPE_CHECKING:  # the graph's types render in a server's client without SQLAlchemy
    from sqlalchemy.orm import Session

#: relations zoo records itself; users declare others with `zoo link`.
RECORDED = ("extract", "materialize", "import")
_RELATION = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: Edges the text form and the web page's drawing show from one parent by one relation
#: before they count the rest.
SHOWN_CHILDREN = 20


@dataclass(frozen=True)
class Node:
    id: int
    kind: str
    name: str
    family: str | None
    content_hash: str
    virtual: bool
    deleted: bool

    @classmethod
    def of(cls, info: ArtifactInfo) -> Node:
        return cls(
            info.id,
            info.kind,
            info.name,
            info.family,
            info.content_hash,
            info.virtual,
            info.deleted,
        )

    @property
    def label(self) -> str:
        """The name, marked when the artifact was removed (its rows stay until gc)."""
        return f"{self.name} (removed)" if self.deleted else self.name


@dataclass
class Lineage:
    """A lineage subgraph around ``root``: nodes, typed edges, and import provenance."""

    root: int
    nodes: dict[int, Node] = field(default_factory=dict)
    edges: list[EdgeInfo] = field(default_factory=list)
    imports: dict[int, list[ImportInfo]] = field(default_factory=dict)
    depth: int | None = None  # the walk's limit in edges; None: the whole graph

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.nodes[self.root].name,
            "depth": self.depth,
            "nodes": [asdict(n) for n in self.nodes.values()],
            "edges": [
                {
                    **e.to_json(),
                    "parent": self.nodes[e.parent_id].name,
                    "child": self.nodes[e.child_id].name,
                }
                for e in self.edges
            ],
            "imports": {
                self.nodes[i].name: [
                    {**asdict(imp), "imported_at": imp.imported_at.isoformat()} for imp in imps
                ]
                for i, imps in self.imports.items()
            },
        }

    def to_text(self) -> str:
        lines = []
        for node_id, imps in self.imports.items():
            for imp in imps:
                rev = f"@{printable(imp.revision[:12])}" if imp.revision else ""
                # A folder's name may hold a newline: raw, it would print a line of its own.
                lines.append(
                    f"{printable(imp.origin)}{rev} --import--> {self.nodes[node_id].label}"
                )
        # A base model fine-tuned ten thousand times: the first few of each parent's
        # children by one relation, then how many more, not a line each.
        shown: dict[tuple[int, str], int] = {}
        for e in self.edges:
            n = shown[e.parent_id, e.relation] = shown.get((e.parent_id, e.relation), 0) + 1
            if n <= SHOWN_CHILDREN:
                lines.append(
                    f"{self.nodes[e.parent_id].label} --{e.relation}--> "
                    f"{self.nodes[e.child_id].label}{_recipe_summary(e)}"
                )
        for (parent, relation), n in shown.items():
            if n > SHOWN_CHILDREN:
                lines.append(
                    f"{self.nodes[parent].label} --{relation}--> {n - SHOWN_CHILDREN} more "
                    "(--format json lists every edge; `zoo ls --derived-from "
                    f"{self.nodes[parent].name}` pages through its descendants)"
                )
        if not lines and self.depth == 0:  # every edge is one step away: none was walked
            lines.append(f"{self.nodes[self.root].label} (depth 0: no edges walked)")
        elif not lines:
            lines.append(f"{self.nodes[self.root].label} (no recorded lineage)")
        return "\n".join(lines)

    def to_dot(self) -> str:
        lines = ["digraph lineage {", "  rankdir=LR;"]
        for n in self.nodes.values():
            shape = {"source": "box", "learngene": "ellipse", "derived": "box"}.get(n.kind, "note")
            style = ', style="dashed"' if n.virtual else ""
            lines.append(f'  n{n.id} [label="{_esc(n.label)}\\n{n.kind}", shape={shape}{style}];')
        for i, (node_id, imps) in enumerate(self.imports.items()):
            for j, imp in enumerate(imps):
                lines.append(f'  o{i}_{j} [label="{_esc(imp.origin)}", shape=note];')
                lines.append(f'  o{i}_{j} -> n{node_id} [label="import"];')
        for e in self.edges:
            lines.append(f'  n{e.parent_id} -> n{e.child_id} [label="{_esc(e.relation)}"];')
        lines.append("}")
        return "\n".join(lines)

    def to_mermaid(self) -> str:
        lines = ["graph LR"]
        for n in self.nodes.values():
            lines.append(f'  n{n.id}["{_esc(n.label)} ({n.kind})"]')
        for i, (node_id, imps) in enumerate(self.imports.items()):
            for j, imp in enumerate(imps):
                lines.append(f'  o{i}_{j}>"{_esc(imp.origin)}"] -->|import| n{node_id}')
        for e in self.edges:
            lines.append(f"  n{e.parent_id} -->|{e.relation}| n{e.child_id}")
        return "\n".join(lines)


def _esc(text: str) -> str:
    return printable(text).replace("\\", "\\\\").replace('"', "'")


def _recipe_summary(e: EdgeInfo) -> str:
    r = e.recipe
    keys = (
        "method",
        "wavelet",
        "levels",
        "keep",
        "rescale",
        "norm",
        "depth",
        "order",
        "device",
        "note",
    )
    # A declared edge's note is the declarer's free text: a newline in it, printed raw,
    # would add a line of its own (a fake edge) to what an auditor reads.
    parts = [f"{k}={printable(str(r[k]))}" for k in keys if r.get(k) not in (None, "")]
    # What else tells two edges of one method apart: the seed of a method that draws
    # random numbers, and a dtype other than the source's own.
    if r.get("seed") is not None and _draws(r.get("method")):
        parts.insert(1, f"seed={r['seed']}")
    if r.get("dtype") not in (None, "", "auto"):
        parts.insert(-1 if "device" in r else len(parts), f"dtype={r['dtype']}")
    if e.relation == "materialize":
        for key, version in _earlier_rules(r):
            parts.insert(-1 if "device" in r else len(parts), f"{key}={version}")
    return f"  [{', '.join(parts)}]" if parts else ""


def _earlier_rules(recipe: dict[str, Any]) -> list[tuple[str, str]]:
    """The versioned rules a materialize edge's bits come from where they are not this
    zoo's (none recorded: 1): the same request made now may give other weights, a sibling
    with the same options that only the rule tells apart."""
    from zoo.derive import DTYPE_VERSION
    from zoo.methods.hypercloning import HYPERCLONING_VERSION
    from zoo.methods.net2net import NET2NET_VERSION

    rules = {
        "hypercloning": ("hypercloning_version", HYPERCLONING_VERSION),
        "net2net": ("net2net_version", NET2NET_VERSION),
    }
    applies = [rules[m] for m in (recipe.get("method"),) if m in rules]
    if recipe.get("dtype") not in (None, "", "auto"):
        applies.append(("dtype_version", DTYPE_VERSION))
    recorded = [(key, str(recipe.get(key, "1")), now) for key, now in applies]
    return [(key, version) for key, version, now in recorded if version != now]


def _draws(method: str | None) -> bool:
    from zoo.methods import get

    try:
        return bool(method) and get(method).random
    except InvalidInputError:  # a method this zoo does not know (a newer zoo's record)
        return False


def _within(root: int, up_edges: list[EdgeInfo], depth: int | None) -> set[int]:
    """The ancestors (and ``root``) fewer than ``depth`` edges up from ``root``."""
    parents: dict[int, list[int]] = {}
    for e in up_edges:
        parents.setdefault(e.child_id, []).append(e.parent_id)
    distance = {root: 0}
    frontier = [root]
    while frontier:  # breadth first: each node at its shortest distance
        step = []
        for child in frontier:
            for parent in parents.get(child, ()):
                if parent not in distance:
                    distance[parent] = distance[child] + 1
                    step.append(parent)
        frontier = step
    return {i for i, d in distance.items() if depth is None or d < depth}


def lineage(
    reg,
    query: str,
    *,
    up: bool = True,
    down: bool = True,
    depth: int | None = None,
    include_deleted: bool = False,
) -> Lineage:
    """The ancestors (``up``) and descendants (``down``) of an artifact, at most ``depth``
    edges away (None: all); of a removed one too with ``include_deleted``. Each direction
    is one recursive query in the database."""
    from sqlalchemy import select

    from zoo.db import graph, queries
    from zoo.db.models import Artifact, ImportRecord

    check_depth(depth)
    if depth is not None and depth >= 2**63:  # more than a database counts: every edge
        depth = None
    with reg.session() as session:
        root = queries.resolve(session, query, include_removed=include_deleted)
        graph_ = Lineage(root=root.id, depth=depth)
        found: dict[int, EdgeInfo] = {}
        ancestry = {root.id}
        for direction, wanted in (("up", up), ("down", down)):
            if wanted:
                for e in graph.walk_edges(session, root.id, up=direction == "up", depth=depth):
                    found[e.id] = e
                    if direction == "up":
                        ancestry.add(e.parent_id)
        graph_.edges = sorted(found.values(), key=lambda e: e.id)
        ids = {root.id} | {e.parent_id for e in graph_.edges} | {e.child_id for e in graph_.edges}
        columns = (
            Artifact.id,
            Artifact.kind,
            Artifact.name,
            Artifact.family,
            Artifact.content_hash,
            Artifact.virtual,
            Artifact.deleted_at,
        )
        ordered = sorted(ids)
        dialect = session.get_bind().dialect.name
        of_ids = select(*columns).where(queries.among(Artifact.id, dialect))
        rows = [
            r
            for start in range(0, len(ordered), 1000)  # under every back end's parameter limit
            for r in session.execute(of_ids, {"ids": ordered[start : start + 1000]})
        ]
        nodes = {
            r.id: Node(
                r.id, r.kind, r.name, r.family, r.content_hash, r.virtual, r.deleted_at is not None
            )
            for r in rows
        }
        lost = sorted(ids - nodes.keys())
        if lost:
            raise VerificationError(
                f"The database's edges name artifact id {', '.join(map(str, lost))}, which it "
                "does not hold (deleted by a tool that does not check the schema's foreign "
                "keys); `zoo fsck` lists such rows: restore the database from a backup."
            )
        graph_.nodes = {root.id: nodes[root.id]} | {i: nodes[i] for i in sorted(nodes)}
        if up:
            # Provenance from outside the registry: the imports of the root and its ancestors,
            # each one edge beyond the artifact it made (none at depth 0).
            near = _within(root.id, [e for e in graph_.edges if e.parent_id in ancestry], depth)
            sources = sorted(i for i in near if nodes[i].kind == "source")
            for imp in session.execute(
                select(
                    ImportRecord.artifact_id,
                    ImportRecord.origin,
                    ImportRecord.revision,
                    ImportRecord.files_json,
                    ImportRecord.imported_at,
                    ImportRecord.imported_by,
                )
                .where(queries.among(ImportRecord.artifact_id, dialect))
                .order_by(ImportRecord.artifact_id, ImportRecord.id),
                {"ids": sources},
            ):
                graph_.imports.setdefault(imp.artifact_id, []).append(
                    ImportInfo(
                        imp.origin,
                        imp.revision,
                        json.loads(imp.files_json),
                        queries.aware(imp.imported_at),
                        imp.imported_by,
                    )
                )
        return graph_


def check_depth(depth) -> None:
    """A lineage's depth: None (all) or a number of edges, 0 or more; checked by the
    registry, by a server and by a client before any request, in the same words."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise InvalidInputError(f"depth must be a number of edges, 0 or more (got {depth!r:.40}).")


def check_link(child, parent, *, relation, note) -> None:
    """Refuse what :func:`link` refuses whatever is registered: checked by the registry and
    by a client before any request, in the same words."""
    from zoo.db.entities import check_lookup

    check_lookup(child)
    check_lookup(parent)
    if note is not None and not isinstance(note, str):  # a recipe is JSON; NaN is not
        raise InvalidInputError(f"The note is text, not {type(note).__name__} ({note!r:.40}).")
    if not isinstance(relation, str) or not _RELATION.fullmatch(relation) or relation in RECORDED:
        raise InvalidInputError(
            f"relation={relation!r} is not allowed; use a lowercase word such as finetune, "
            f"distill, quantize or merge ({', '.join(RECORDED)} are recorded by zoo itself).",
            params=["relation"],
        )


def link(reg, child: str, parent: str, *, relation: str, note: str | None = None) -> EdgeInfo:
    """Declare that ``child`` was made from ``parent`` (e.g. a fine-tune)."""
    check_link(child, parent, relation=relation, note=note)

    def work(session: Session) -> EdgeInfo:
        from zoo import __version__
        from zoo.db import queries
        from zoo.db.engine import lock_lineage
        from zoo.db.graph import add_edge_unless_cycle, link_named

        lock_lineage(session)  # before the cycle check, so no other link slips in between
        columns = {
            "relation": relation,
            "recipe": {"declared": True, "note": note or ""},
            "zoo_version": __version__,
            "by": reg.user,
        }
        # Two names of live artifacts, a new edge: one statement. Anything else is read
        # again name by name, as every command reads names, to say what it is.
        added = link_named(session, parent=parent, child=child, **columns)
        if added is not None:
            edge = queries.edge_info(added)
            return replace(edge, parent_name=added.parent_name, child_name=added.child_name)
        c = queries.resolve(session, child)
        p = queries.resolve(session, parent)
        if c.id == p.id:
            raise InvalidInputError("An artifact cannot be its own parent.")
        edge = add_edge_unless_cycle(session, parent_id=p.id, child_id=c.id, **columns)
        if edge is None:
            raise InvalidInputError(
                f"{c.name} is already an ancestor of {p.name}; the link would make a cycle."
            )
        return replace(queries.edge_info(edge), parent_name=p.name, child_name=c.name)

    return reg.transaction(work)


def is_ancestor(session: Session, ancestor: int, node: int) -> bool:
    """Whether ``ancestor`` is an ancestor of ``node`` (one recursive query)."""
    from zoo.db.graph import is_ancestor as walk

    return walk(session, ancestor, node)
