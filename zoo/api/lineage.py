"""Lineage: ancestors and descendants through typed edges, and user-declared links."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from zoo.db import queries
from zoo.db.entities import ArtifactInfo, EdgeInfo, ImportInfo
from zoo.errors import InvalidInputError

#: relations zoo records itself; users declare others with `zoo link`.
RECORDED = ("extract", "materialize")
_RELATION = re.compile(r"[a-z][a-z0-9_-]{0,31}")


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

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.nodes[self.root].name,
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
                rev = f"@{imp.revision[:12]}" if imp.revision else ""
                lines.append(f"{imp.origin}{rev} --import--> {self.nodes[node_id].label}")
        for e in self.edges:
            detail = _recipe_summary(e)
            lines.append(
                f"{self.nodes[e.parent_id].label} --{e.relation}--> "
                f"{self.nodes[e.child_id].label}{detail}"
            )
        if not lines:
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
    return text.replace("\\", "\\\\").replace('"', "'")


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
    parts = [f"{k}={r[k]}" for k in keys if r.get(k) not in (None, "")]
    return f"  [{', '.join(parts)}]" if parts else ""


def lineage(reg, query: str, *, up: bool = True, down: bool = True) -> Lineage:
    """The ancestors (``up``) and descendants (``down``) of an artifact."""
    from zoo.db.models import Artifact

    with reg.session() as session:
        root = queries.resolve(session, query)
        graph = Lineage(root=root.id)
        graph.nodes[root.id] = Node.of(queries.to_info(session, root, tensors=False))
        seen_edges: set[int] = set()
        for direction, wanted in (("up", up), ("down", down)):
            if not wanted:
                continue
            todo = deque([root.id])
            visited = {root.id}
            while todo:
                node_id = todo.popleft()
                found = (
                    queries.edges(session, child_id=node_id)
                    if direction == "up"
                    else queries.edges(session, parent_id=node_id)
                )
                for e in found:
                    if e.id not in seen_edges:
                        seen_edges.add(e.id)
                        graph.edges.append(e)
                    nxt = e.parent_id if direction == "up" else e.child_id
                    if nxt not in graph.nodes:
                        row = session.get(Artifact, nxt)
                        graph.nodes[nxt] = Node.of(queries.to_info(session, row, tensors=False))
                    if nxt not in visited:
                        visited.add(nxt)
                        todo.append(nxt)
            if direction == "up":
                _collect_imports(session, graph)
        graph.edges.sort(key=lambda e: e.id)
        return graph


def _collect_imports(session: Session, graph: Lineage) -> None:
    from zoo.db.models import Artifact

    for node_id, node in graph.nodes.items():
        if node.kind == "source":
            info = queries.to_info(session, session.get(Artifact, node_id), tensors=False)
            if info.imports:
                graph.imports[node_id] = list(info.imports)


def link(reg, child: str, parent: str, *, relation: str, note: str | None = None) -> EdgeInfo:
    """Declare that ``child`` was made from ``parent`` (e.g. a fine-tune)."""
    if not _RELATION.fullmatch(relation) or relation in RECORDED:
        raise InvalidInputError(
            f"--relation {relation!r} is not allowed; use a lowercase word such as finetune, "
            f"distill, quantize or merge ({', '.join(RECORDED)} are recorded by zoo itself)."
        )

    def work(session: Session) -> EdgeInfo:
        from zoo.db.engine import lock_lineage

        lock_lineage(session)  # before the cycle check, so no other link slips in between
        c = queries.resolve(session, child)
        p = queries.resolve(session, parent)
        if c.id == p.id:
            raise InvalidInputError("An artifact cannot be its own parent.")
        if is_ancestor(session, c.id, p.id):
            raise InvalidInputError(
                f"{c.name} is already an ancestor of {p.name}; the link would make a cycle."
            )
        from zoo import __version__

        queries.add_edge(
            session,
            parent=p,
            child=c,
            relation=relation,
            recipe={"declared": True, "note": note or ""},
            zoo_version=__version__,
            by=reg.user,
        )
        return next(
            e
            for e in queries.edges(session, child_id=c.id)
            if e.parent_id == p.id and e.relation == relation
        )

    return reg.transaction(work)


def is_ancestor(session: Session, ancestor: int, node: int) -> bool:
    todo, seen = deque([node]), {node}
    while todo:
        for e in queries.edges(session, child_id=todo.popleft()):
            if e.parent_id == ancestor:
                return True
            if e.parent_id not in seen:
                seen.add(e.parent_id)
                todo.append(e.parent_id)
    return False
