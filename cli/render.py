"""Human-readable text for artifacts, edges and reports (JSON is printed as is)."""

from __future__ import annotations

# Recorded paths, user names and file names are shown with control characters escaped
# (a folder named "a\nb" would print a line of its own); --json keeps them exact.
from zoo.text import printable


def human_bytes(n: int) -> str:
    """Decimal units (a KB is 1000 bytes), as zoo's other messages, ``df -H`` and the Hub
    print sizes."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def family_of(info) -> str:
    """The family column: ``-`` for an artifact no family resizes (catalogued only)."""
    return info.family or "-"


def artifact_line(info) -> str:
    virtual = " (virtual)" if info.virtual else ""
    aliases = f"  aliases: {', '.join(info.aliases)}" if info.aliases else ""
    n = len(info.files)
    files = f", {n} {'file' if n == 1 else 'files'}" if n else ""
    return (
        f"{info.name}  {info.kind}{virtual}  {family_of(info)}  {info.content_hash[:12]}  "
        f"{info.tensor_count} tensors{files}  {human_bytes(info.nbytes)}{aliases}"
    )


def artifact_table(infos) -> str:
    if not infos:
        return "(no artifacts; register one with `zoo import PATH`)"
    rows = [("NAME", "KIND", "FAMILY", "HASH", "SIZE", "ALIASES")]
    for i in infos:
        kind = i.kind + (" (virtual)" if i.virtual else "") + (" (removed)" if i.deleted else "")
        rows.append(
            (
                i.name,
                kind,
                family_of(i),
                i.content_hash[:12],
                human_bytes(i.nbytes),
                ",".join(i.aliases),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def page_footer(page, next_command: str) -> str:
    """Where a page stands in the listing, and the command that prints the next one."""
    return f"{len(page.items)} of {page.total} shown; next page: {next_command}"


def artifact_detail(info, with_tensors: bool = False) -> str:
    from zoo.api.learngene_format import short_bands as shortfall

    lines = [
        f"name:      {info.name}",
        f"kind:      {info.kind}{' (virtual: recipe only)' if info.virtual else ''}"
        f"{' (removed with `zoo rm`; `zoo gc` forgets it)' if info.deleted else ''}",
        f"family:    {info.family or _no_family(info)}",
        f"hash:      {info.content_hash}",
        f"created:   {info.created_at.isoformat(timespec='seconds')} by "
        f"{printable(info.created_by)}",
        f"tensors:   {info.tensor_count} ({human_bytes(info.nbytes)})",
    ]
    if info.aliases:
        lines.append(f"aliases:   {', '.join(info.aliases)}")
    lines.extend(same_content_lines(info))
    for key, value in sorted(info.info.items()):
        if key == "not_kept":
            continue  # listed with the files, below
        if key == "signals" and isinstance(value, dict):
            # Per-signal axes, statistics and digests: hundreds of lines; --json has them.
            value = f"{len(value)} parameter groups (details: --json)"
        lines.append(f"{key + ':':<10} {printable(str(value))}")
    for line in short_bands(info, shortfall(info)):
        lines.append(f"bands:     {line}")
    for f in info.files:
        lines.append(
            f"file:      {printable(f.name)}  {f.role}  {human_bytes(f.nbytes)}  {f.digest[:12]}"
        )
    for origin, left in sorted((info.info.get("not_kept") or {}).items()):
        names = ", ".join(printable(_entry(e)) for e in left)
        lines.append(f"not kept:  {names} (held by {printable(origin)}; an export lacks them)")
    for imp in info.imports:
        rev = f"@{printable(imp.revision)}" if imp.revision else ""
        lines.append(
            f"imported:  {printable(imp.origin)}{rev} "
            f"({imp.imported_at.isoformat(timespec='seconds')} by {printable(imp.imported_by)})"
        )
    if with_tensors:
        for t in info.tensors:
            lines.append(f"  {t.name}  {t.dtype}  {list(t.shape)}  {t.digest[:12]}")
    return "\n".join(lines)


def _halvings(role: str, size: int) -> str:
    times = (size & -size).bit_length() - 1  # how many times it halves exactly
    if times == 0:
        return f"{role} {size} does not halve"
    return f"{role} {size} halves {'once' if times == 1 else f'{times} times'}"


def short_bands(info, short: list[dict], *, every: bool = True) -> list[str]:
    """One sentence per shortfall of a dwt learngene's bands
    (:func:`zoo.api.learngene_format.short_bands`): how many parameter groups hold which
    levels, why, which groups, and, for groups without any band, that materializing
    reads the source for them at every size. ``every=False``: the first few groups, and
    where to see them all."""
    groups: dict[tuple, list[str]] = {}
    for entry in short:
        why = tuple(sorted(entry["limits"].items()))
        groups.setdefault((tuple(entry["levels"]), why), []).append(entry["signal"])
    total = len(info.info.get("signals") or {})
    source = info.info.get("source_name") or info.info.get("source", "")[:12]
    wanted = info.info.get("levels")
    lines = []
    for (levels, why), keys in sorted(groups.items()):
        because = " and ".join(_halvings(role, size) for role, size in why)
        shown = keys if every else keys[:NOTE_ENTRIES]
        names = ", ".join(printable(k) for k in shown)
        if len(shown) < len(keys):
            names += (
                f" and {len(keys) - len(shown)} more (`zoo show {printable(info.name)}` "
                "lists them all; --json gives them as short_bands)"
            )
        if levels:
            span = f"level {levels[0]}" if len(levels) == 1 else f"levels 1-{levels[-1]}"
            lines.append(
                f"{len(keys)} of {total} parameter groups hold {span} only, not 1-{wanted}, "
                f"as {because}: {names}"
            )
        else:
            lines.append(
                f"{len(keys)} of {total} parameter groups hold no band, as {because}: "
                f"{names}; materialize computes them from the source {printable(source)} at "
                "every size"
            )
    return lines


#: Files a note names before it says how many more there are.
NOTE_ENTRIES = 8


def _entry(entry: dict) -> str:
    return f"{entry['name']} ({entry['why']})" if entry.get("why") else entry["name"]


def not_kept(info) -> list[dict]:
    """What the folders ``info`` was imported from held that zoo did not keep
    ({"name", "why"}), each name once."""
    seen: dict[str, dict] = {}
    for _, left in sorted((info.info.get("not_kept") or {}).items()):
        for entry in left:
            seen.setdefault(entry["name"], entry)
    return [seen[n] for n in sorted(seen)]


def entries(left: list[dict], name: str) -> str:
    """``left`` for a one-line note: the first few, and where to see them all."""
    shown = ", ".join(printable(_entry(e)) for e in left[:NOTE_ENTRIES])
    if len(left) > NOTE_ENTRIES:
        shown += (
            f" and {len(left) - NOTE_ENTRIES} more (`zoo show {name}` lists them all; --json "
            "gives them as not_kept)"
        )
    return shown


def _no_family(info) -> str:
    if info.kind == "placeholder":
        return "- (a placeholder: no content until it is imported)"
    model_type = (info.config or {}).get("model_type") or "none"
    return f"- (model_type {model_type}: catalogued; no family resizes it)"


def same_content_lines(info) -> list[str]:
    """The other artifacts holding exactly this content, and what that means."""
    if not info.same_content:
        return []
    others = ", ".join(f"{kind} {name}" for kind, name in info.same_content)
    return [
        f"same content: {others} (identical config and tensors, one hash; each record "
        "keeps its own lineage)"
    ]


# --- maintenance reports ---------------------------------------------------------------------


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _first(names, field: str) -> str:
    """``names`` for one line of a report: a blob thousands of artifacts share, a gc of a
    library's worth of removed rows, would make that line megabytes long."""
    shown = ", ".join(printable(n) for n in names[:NOTE_ENTRIES])
    if len(names) > NOTE_ENTRIES:
        shown += f" and {len(names) - NOTE_ENTRIES} more, listed in full by --json as {field}"
    return shown


def _problems(problems) -> list[str]:
    lines = []
    for p in problems:
        held = f" (held by {_first(p.artifacts, 'artifacts')})" if p.artifacts else ""
        detail = f": {p.detail}" if p.detail and p.problem == "wrong-size" else ""
        lines.append(f"  {p.problem:<10} {p.digest[:16]}{held}{detail}")
        if p.fix:  # it may name a recorded folder: one line, whatever the folder's name
            lines.append(f"    fix: {printable(p.fix)}")
    return lines


def fsck_report(report) -> str:
    lines = [
        f"store {report.store_url}: {report.stored_blobs} blobs; "
        f"{report.checked_rows} blobs needed by kept rows"
    ]
    if report.problems:
        lines.append(
            f"{len(report.problems)} damaged (`zoo verify` says what restores each; "
            "`zoo verify --repair` restores those zoo can produce again):"
        )
        lines += _problems(report.problems)
    else:
        lines.append("every kept row's blobs are present")
    for line in report.dangling:
        lines.append(
            f"database: {line} (deleted by a tool that does not check the schema's foreign "
            "keys; restore the database from a backup)"
        )
    if report.temp_files:
        lines.append(
            f"{len(report.temp_files)} leftovers of killed writers "
            f"({human_bytes(sum(t.size for t in report.temp_files))})"
        )
    if report.orphans and report.shared_with:
        lines.append(
            f"{len(report.orphans)} blobs no row of this registry points at "
            f"({human_bytes(sum(o.size for o in report.orphans))}); {report.shared_with} "
            f"other registr{'y uses' if report.shared_with == 1 else 'ies use'} this store "
            "and may need them, so neither `zoo gc` nor `zoo fsck --repair` sweeps it"
        )
    elif report.orphans:
        lines.append(
            f"{len(report.orphans)} orphan blobs no row points at "
            f"({human_bytes(sum(o.size for o in report.orphans))}; `zoo gc` sweeps them once "
            "older than its --grace, 24h by default; `zoo gc --grace 0` sweeps them at once "
            "when no writer is running)"
        )
    if report.output_leftovers:
        lines.append(
            f"{len(report.output_leftovers)} unfinished --out folders of killed writers: "
            + ", ".join(map(printable, report.output_leftovers[:3]))
        )
    found = len(report.temp_files) + len(report.orphans) + len(report.output_leftovers)
    if report.repair:
        kept = report.left
        # A dead writer's folders go whatever their age; the store's leftovers once older
        # than the grace period (a writer elsewhere may still be using them).
        outputs = set(report.output_leftovers)
        dead_writers = sum(1 for r in report.removed if r in outputs)
        if dead_writers:
            lines.append(
                f"removed {dead_writers} unfinished --out folders of writers no longer running"
            )
        lines.append(
            f"removed {len(report.removed) - dead_writers} older than {_age(report.grace_s)}"
            + (f"; kept {kept} younger ones (a writer may still be using them)" if kept else "")
        )
        if report.quarantined:
            lines.append(_set_aside(report.quarantined, report.quarantine))
        if report.restored:  # a --force killed mid-swap: the previous output is back
            lines.append(
                f"put back {len(report.restored)} previous --out folders a killed --force had "
                "set aside: " + ", ".join(map(printable, report.restored[:3]))
            )
    elif found and not report.shared_with:
        lines.append(
            "run `zoo fsck --repair` to remove what killed writers left and what is older "
            "than the grace period"
        )
    return "\n".join(lines)


def _set_aside(digests, quarantine: str, would: bool = False) -> str:
    """The line saying which files zoo moved (or would move) aside, and where to."""
    names = [getattr(d, "name", d) for d in digests]
    shown = ", ".join(n[:16] for n in names[:3]) + (
        f" and {len(names) - 3} more" if len(names) > 3 else ""
    )
    return (
        f"{'would move' if would else 'moved'} {len(names)} files whose bytes do not hash to "
        f"their blob's name (not zoo's writing, so never deleted) into "
        f"{printable(quarantine)}: {shown}"
    )


def gc_report(report) -> str:
    verb = "would sweep" if report.dry_run else "swept"
    lines = [
        f"{verb} {len(report.swept)} blobs ({human_bytes(report.swept_bytes)}); "
        f"{report.marked} blobs still needed; {report.too_young} unneeded but younger "
        f"than {_age(report.grace_s)}"
    ]
    if report.quarantined:
        lines.append(_set_aside(report.quarantined, report.quarantine, report.dry_run))
    forgot = "would forget" if report.dry_run else "forgot"
    removed = [n for n in report.hard_deleted if n not in set(report.unused_placeholders)]
    if removed:
        lines.append(
            f"{forgot} {len(removed)} removed artifacts: {_first(removed, 'hard_deleted')}"
        )
    if report.unused_placeholders:
        lines.append(
            f"{forgot} {len(report.unused_placeholders)} placeholders no model card names "
            f"as a base any more: {_first(report.unused_placeholders, 'unused_placeholders')}"
        )
    if report.kept_deleted:
        lines.append(
            f"kept {len(report.kept_deleted)} removed artifacts that kept ones derive "
            f"from: {_first(report.kept_deleted, 'kept_deleted')}"
        )
    return "\n".join(lines)


def claim_release(report) -> str:
    from zoo.api.store_claim import quoted  # a claim's text, as zoo did not write it

    named = f"it named {quoted(report.named)}" if report.named else "it named no database"
    claim = f"the claim of registry {report.registry_id} on {report.store_url}"
    if report.outcome == "removed":
        return f"removed {claim} ({named})"
    if report.outcome == "handed over":
        return f"handed {claim} over to {printable(report.database)} ({named})"
    return f"{claim} names this database ({printable(report.database)}) already"


def verify_report(report) -> str:
    head = f"checked {report.checked} blobs ({human_bytes(report.checked_bytes)})"
    restored = [f"restored {len(report.repaired)} damaged blobs"] if report.repaired else []
    if report.quarantined:
        restored.append(_set_aside(report.quarantined, report.quarantine))
    if report.ok:
        return "\n".join([*restored, f"{head}: all intact"])
    unreadable = len(report.problems) - len(report.damaged)
    found = f"{len(report.damaged)} damaged" + (f", {unreadable} unreadable" if unreadable else "")
    lines = [*restored, f"{head}: {found}", *_problems(report.problems)]
    fixable = sum("--repair" in p.fix for p in report.damaged)
    if fixable and not report.repair:
        lines.append(f"run `zoo verify --repair` to restore {fixable} of them")
    return "\n".join(lines)


def token_table(infos) -> str:
    if not infos:
        return "(no tokens; create one with `zoo token create --name NAME --role read`)"
    rows = [("NAME", "ROLE", "CREATED", "BY", "EXPIRES", "REVOKED")]
    for t in infos:
        expires = t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never"
        rows.append(
            (
                t.name,
                t.role,
                t.created_at.isoformat(timespec="seconds"),
                t.created_by,
                f"{expires} (expired)" if t.expired else expires,
                t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "",
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
