"""Human-readable text for artifacts, edges and reports (JSON is printed as is)."""

from __future__ import annotations


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def artifact_line(info) -> str:
    virtual = " (virtual)" if info.virtual else ""
    return (f"{info.name}  {info.kind}{virtual}  {info.family}  {info.content_hash[:12]}  "
            f"{len(info.tensors)} tensors  {human_bytes(info.nbytes)}")


def artifact_table(infos) -> str:
    if not infos:
        return "(no artifacts; register one with `zoo import PATH`)"
    rows = [("NAME", "KIND", "FAMILY", "HASH", "SIZE", "ALIASES")]
    for i in infos:
        kind = i.kind + (" (virtual)" if i.virtual else "") + (" (removed)" if i.deleted else "")
        rows.append((i.name, kind, i.family, i.content_hash[:12], human_bytes(i.nbytes),
                     ",".join(i.aliases)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


def artifact_detail(info, with_tensors: bool = False) -> str:
    lines = [
        f"name:      {info.name}",
        f"kind:      {info.kind}{' (virtual: recipe only)' if info.virtual else ''}",
        f"family:    {info.family}",
        f"hash:      {info.content_hash}",
        f"created:   {info.created_at.isoformat(timespec='seconds')} by {info.created_by}",
        f"tensors:   {len(info.tensors)} ({human_bytes(info.nbytes)})",
    ]
    if info.aliases:
        lines.append(f"aliases:   {', '.join(info.aliases)}")
    for key, value in sorted(info.info.items()):
        lines.append(f"{key + ':':<10} {value}")
    for imp in info.imports:
        rev = f"@{imp.revision}" if imp.revision else ""
        lines.append(f"imported:  {imp.origin}{rev} ({imp.imported_at.isoformat(timespec='seconds')}"
                     f" by {imp.imported_by})")
    if with_tensors:
        for t in info.tensors:
            lines.append(f"  {t.name}  {t.dtype}  {list(t.shape)}  {t.digest[:12]}")
    return "\n".join(lines)
