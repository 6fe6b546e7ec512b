"""Auditing a checkpoint found on a disk: which registered artifact is it, where did it
come from, and was it changed after it was derived?"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.db.entities import ArtifactInfo
from zoo.errors import InvalidInputError
from zoo.text import printable


@dataclass
class AuditReport:
    """The verdict on one file or folder.

    Attributes:
        status: ``known`` (every tensor matches a registered artifact), ``modified`` (it
            shares tensors with one but some differ; shared all-zero or all-one tensors,
            which unrelated models have in common, do not count), ``removed`` (it is, or
            was derived as, an artifact removed with ``zoo rm`` and not yet collected: a
            file that differs from one is ``modified``, the artifact marked removed), or
            ``unknown``.
        artifact: the registered artifact it is (or was derived as).
        differing / missing / extra: tensor names whose bytes differ, that the file lacks,
            and that the artifact lacks.
        config_differs: the tensors match but config.json does not.
        not_compared: tensors present on one side only, or differing, that are no
            evidence either way: buffers transformers rebuilds from the config and drops
            on ``save_pretrained`` (position ids, causal masks, rotary frequencies), and
            tied copies it writes once (bytes the other side holds under another name).
        named_by_file: the file's zoo metadata names ``artifact`` (a zoo output); where
            several artifacts hold this content (``artifact.same_content`` lists the
            others) that decides which is named, else the first registered is.
        verified: with ``verify``, whether re-deriving reproduced the recorded hashes.
        cast_from: the narrower dtypes (``BF16``...) whose recorded values some of the
            file's float32 tensors hold exactly: a lossless cast, as transformers makes
            when it loads a bf16 checkpoint as float32 and saves it; empty otherwise.
        rounded_to: the narrower dtypes (``BF16``, ``F16``) some of the file's tensors
            hold the recorded float32 values in, rounded to nearest as torch rounds: a cast
            that rounds, as transformers makes when it loads a float32 checkpoint as bf16
            or fp16 and saves it. Those tensors count as the recorded ones; empty otherwise.
        prefix_dropped: the base-model prefix (``"bert."``, ``"model."``) that the
            artifact's tensor names have and the file's lack: its base model saved on its
            own (``AutoModel.from_pretrained(...).save_pretrained``, sentence-transformers).
            The tensors are compared under the artifact's names.
        prefix_added: the prefix the file's names have and the artifact's lack (a task
            model saved from a registered base model); compared the same way.
        head_dropped: the file is the artifact's base model without the head: every tensor
            it lacks (``missing``) is outside ``prefix_dropped``.
        norm_names_differ: the file holds some of the artifact's LayerNorm gains and biases
            under the other of the two names transformers loads them by (``LayerNorm.weight``
            / ``.bias`` for ``LayerNorm.gamma`` / ``.beta`` or the reverse: a BERT converted
            from TensorFlow, saved by a transformers that writes the current names); they
            are compared under the artifact's names.
        wrapper_prefix: the prefix every one of the file's tensor names has and the
            artifact's lack, that a training wrapper adds to a state dict saved as it is
            (``"_orig_mod."``: torch.compile, ``"module."``: DDP or DataParallel);
            transformers loads none of them until it is stripped. The tensors are compared
            under the artifact's names.
    """

    path: str
    status: str
    artifact: ArtifactInfo | None = None
    differing: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    config_differs: bool = False
    not_compared: list[str] = field(default_factory=list)
    named_by_file: bool = False
    lineage: Any = None
    verified: bool | None = None
    verify_error: str | None = None
    cast_from: list[str] = field(default_factory=list)
    rounded_to: list[str] = field(default_factory=list)
    prefix_dropped: str | None = None
    prefix_added: str | None = None
    head_dropped: bool = False
    norm_names_differ: bool = False
    wrapper_prefix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "artifact": self.artifact.to_json() if self.artifact else None,
            "differing": self.differing,
            "missing": self.missing,
            "extra": self.extra,
            "config_differs": self.config_differs,
            "not_compared": self.not_compared,
            "named_by_file": self.named_by_file,
            "lineage": self.lineage.to_json() if self.lineage else None,
            "verified": self.verified,
            "verify_error": self.verify_error,
            "cast_from": self.cast_from,
            "rounded_to": self.rounded_to,
            "prefix_dropped": self.prefix_dropped,
            "prefix_added": self.prefix_added,
            "head_dropped": self.head_dropped,
            "norm_names_differ": self.norm_names_differ,
            "wrapper_prefix": self.wrapper_prefix,
        }

    def to_text(self) -> str:
        path = printable(str(self.path))  # a newline in it would print a line of its own
        if self.status == "unknown":
            return f"{path}: unknown: no registered artifact shares its tensors."
        a = self.artifact
        if self.status == "removed":
            return (
                f"{path}: was {a.kind} {a.name} ({a.content_hash[:12]}), removed with "
                "`zoo rm`; importing or materializing it again brings it back until `zoo gc` "
                "forgets it, once nothing kept descends from it."
            )
        lines = []
        if a.deleted:  # modified from an artifact removed with `zoo rm`, not yet collected
            a = dataclasses.replace(a, name=f"{a.name} (removed with `zoo rm`)")
        if self.status == "known":
            note = " (config.json differs)" if self.config_differs else ""
            lines.append(f"{path}: {a.kind} {a.name} ({a.content_hash[:12]}){note}")
        elif self.head_dropped and not self.differing:
            lines.append(
                f"{path}: MODIFIED: a PART of {a.kind} {a.name} "
                f"({a.content_hash[:12]}): its base model, saved without its head: every "
                f"tensor of the artifact it holds is unchanged; {len(self.missing)} missing "
                "(the head)"
                + (
                    f", {len(self.extra)} extra (layers the base model adds, not the artifact's)"
                    if self.extra
                    else ""
                )
            )
            lines.extend(f"  missing: {printable(name)}" for name in self.missing[:20])
            lines.extend(f"  extra:   {printable(name)}" for name in self.extra[:20])
        elif self.missing and not (self.differing or self.extra):
            # One shard of a sharded checkpoint, or a copy with tensors dropped.
            lines.append(
                f"{path}: MODIFIED: a PART of {a.kind} {a.name} "
                f"({a.content_hash[:12]}): every tensor it holds is that artifact's, "
                f"unchanged; {len(self.missing)} missing (one shard of it, or a cut-down copy)"
            )
        else:
            lines.append(
                f"{path}: MODIFIED from {a.kind} {a.name} "
                f"({a.content_hash[:12]}): {len(self.differing)} "
                + ("tensor differs" if len(self.differing) == 1 else "tensors differ")
                + (f", {len(self.missing)} missing" if self.missing else "")
                + (f", {len(self.extra)} extra" if self.extra else "")
            )
            for name in self.differing[:20]:
                lines.append(f"  differs: {printable(name)}")
            for name in self.missing[:20]:
                lines.append(f"  missing: {printable(name)}")
            for name in self.extra[:20]:
                lines.append(f"  extra:   {printable(name)}")
        if self.prefix_dropped:
            lines.append(
                f"  names: the artifact's without the prefix {self.prefix_dropped!r} (its "
                "base model saved on its own, as AutoModel and sentence-transformers save it)"
            )
        if self.prefix_added:
            lines.append(
                f"  names: the artifact's under the prefix {self.prefix_added!r} (a model "
                "built on it, saved with its base model's prefix)"
            )
        if self.wrapper_prefix:
            lines.append(
                f"  names: the artifact's under the prefix {self.wrapper_prefix!r} that "
                f"{_wrappers(self.wrapper_prefix)} adds to a state dict (transformers loads "
                "none of them until it is stripped)"
            )
        if self.norm_names_differ:
            lines.append(
                "  names: LayerNorm gains and biases under the other of the names transformers "
                "loads them by (weight/bias for gamma/beta, or the reverse)"
            )
        # Only the tensors that matched were cast: those that differ or are extra are not
        # the recorded values, rounded or not.
        unlike = " or ".join(
            what for what, names in (("differ", self.differing), ("are extra", self.extra)) if names
        )
        but = f", but those that {unlike}," if unlike else ""
        if self.cast_from:
            lines.append(
                f"  cast: its wider tensors{but} hold the recorded "
                f"{', '.join(self.cast_from)} values exactly (a cast that loses nothing)"
            )
        if self.rounded_to:
            lines.append(
                f"  cast: its {', '.join(self.rounded_to)} tensors{but} are the recorded "
                "float32 values rounded to nearest (a cast that rounds, as a load in that dtype "
                "and a save make)"
            )
        if self.not_compared:
            lines.append(
                f"  not compared: {len(self.not_compared)} buffers or tied copies that "
                "transformers rebuilds or writes once ("
                + ", ".join(self.not_compared[:3])
                + (", ..." if len(self.not_compared) > 3 else "")
                + ")"
            )
        if a.same_content:
            others = ", ".join(f"{kind} {name}" for kind, name in a.same_content)
            why = (
                "the file's metadata names it"
                if self.named_by_file
                else "it is the first registration of this content"
            )
            lines.append(
                f"  same content: {others}: identical config and tensors; {a.name} is "
                f"named above because {why}"
            )
        if self.verified is not None:
            lines.append(
                "verify: re-derived bit for bit"
                if self.verified
                else f"verify: FAILED: {self.verify_error}"
            )
        if self.lineage is not None:
            lines.append("ancestry:")
            lines.extend("  " + line for line in self.lineage.to_text().splitlines())
        return "\n".join(lines)


def check_audit_path(path) -> Path:
    """``path`` as the file system path it names (``~`` expanded, as an import's source
    is), refused when it names no file: not text, or empty (which would read the current
    folder). Checked by a local audit and by a client's."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InvalidInputError(f"audit takes a folder or .safetensors path, not {path!r:.60}.")
    return Path(path).expanduser()


def audit(reg, path: str | Path, *, verify: bool = False, convert_bin: bool = False) -> AuditReport:
    """Identify ``path`` (an HF folder or a .safetensors file; pickle weights with
    ``convert_bin``, read as an import reads them) by content.

    When several artifacts hold the same content (a checkpoint materialized at its
    source's own size is its source, byte for byte), the report names the one the file
    says it is (a zoo output's metadata names its derived checkpoint), else the first
    registered, and lists the others in ``artifact.same_content``.
    """
    from zoo.checkpoint import open_checkpoint
    from zoo.checkpoint.casts import narrowed

    with open_checkpoint(check_audit_path(path), allow_bin=convert_bin) as ckpt:
        tensors, config, metadata = list(ckpt.tensors), ckpt.config, dict(ckpt.metadata)
        report, _ = identify_with_casts(
            lambda manifest: _identify(reg, str(path), manifest, config, metadata),
            tensors,
            lambda: narrowed(ckpt),
        )
    if verify:
        _verify(reg, report)
    return report


def identify_with_casts(identify, tensors, narrowed, records_of=lambda a: a.tensors):
    """``identify(manifest) -> AuditReport`` on the file's tensors and, when that finds no
    exact match and the file holds float32 tensors, on the records they would have at the
    narrower dtype they hold exactly (``narrowed()``: see
    :func:`zoo.checkpoint.casts.narrowed`): first all of them narrowed, then, against the
    artifact that finds, each one as that artifact recorded it (``records_of(artifact)``:
    its tensor records, which a client asks the server for). Returns the best report and
    the manifest it came from; a cast manifest wins only by matching more, and never by
    rounding the file's own float32 values."""
    from zoo.checkpoint.casts import NARROWER, as_narrowed, as_recorded

    report = identify(tensors)
    if report.status not in ("unknown", "modified") or not any(
        t.dtype in NARROWER for t in tensors
    ):
        return report, tensors
    alternatives = narrowed()
    best, best_manifest = report, tensors
    for code in sorted({code for found in alternatives.values() for code in found}):
        manifest = as_narrowed(tensors, alternatives, code)
        candidate = identify(manifest)
        if candidate.artifact is not None:
            found = records_of(candidate.artifact)
            recorded = {t.name: (t.digest, t.dtype) for t in found}
            manifest = as_recorded(tensors, alternatives, recorded)
            candidate = identify(manifest)
        if candidate.rounded_to:  # a float32 file's own values: no cast made them
            continue
        if _rank(candidate) > _rank(best):
            best, best_manifest = candidate, manifest
    best.cast_from = sorted(
        {m.dtype for m, t in zip(best_manifest, tensors, strict=True) if m is not t}
    )
    return best, best_manifest


def _rank(report: AuditReport) -> tuple[int, int]:
    """How well a report matches: known, then modified by fewer tensors, then unknown."""
    status = {"known": 3, "removed": 2, "modified": 1}.get(report.status, 0)
    return status, -len(report.differing) - len(report.missing) - len(report.extra)


def audit_manifest(
    reg,
    label: str,
    tensors,
    config: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    *,
    verify: bool = False,
) -> AuditReport:
    """Identify a checkpoint from its tensors' records alone (``name``, ``dtype``,
    ``shape``, ``nbytes`` and ``digest`` each): what a client that hashed its file
    itself sends, so the weights need not travel. ``label`` names it in the report.

    Raises:
        InvalidInputError: a name listed twice, a dtype safetensors does not
            have, a shape that is not sizes, ``nbytes`` other than the shape's, or a digest
            that is not a sha256 (the verdict would depend on the list's order or call
            a record of impossible tensors known).
    """
    _check_manifest(tensors)
    report = _identify(reg, label, tensors, config, metadata)
    if verify:
        _verify(reg, report)
    return report


def _check_manifest(tensors) -> None:
    import math
    import re

    from zoo.checkpoint.safetensors_format import DTYPE_ITEMSIZE

    seen: set[str] = set()  # none at all is a file of no tensors: unknown, as locally
    for t in tensors:
        what = f"Tensor {t.name!r:.80}"
        if t.name in seen:
            raise InvalidInputError(f"{what} is listed twice; each name holds one tensor.")
        seen.add(t.name)
        if t.dtype not in DTYPE_ITEMSIZE:
            raise InvalidInputError(f"{what}: {t.dtype!r:.20} is not a safetensors dtype.")
        shape = tuple(t.shape)
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in shape):
            raise InvalidInputError(f"{what}: shape {list(shape)!r:.80} is not sizes.")
        if t.nbytes != math.prod(shape) * DTYPE_ITEMSIZE[t.dtype]:
            raise InvalidInputError(
                f"{what}: {t.nbytes} bytes is not what {t.dtype} {list(shape)} holds."
            )
        if not isinstance(t.digest, str) or not re.fullmatch(r"[0-9a-f]{64}", t.digest):
            raise InvalidInputError(f"{what}: its digest is not a sha256 in hex.")


def _identify(reg, label: str, tensors, config, metadata, **options) -> AuditReport:
    """The verdict on a file's tensor records (see :func:`_identify_as_named`), under the
    file's names and, where every name has a training wrapper's prefix (a state dict
    saved from a torch.compile'd or DDP-wrapped model), also without it: the better
    match is the verdict, the file's own names winning a tie (a wrapped copy imported
    as it is)."""
    report = _identify_as_named(reg, label, tensors, config, metadata, **options)
    wrapper, unwrapped = _unwrapped(tensors)
    if wrapper is None or report.status == "known":
        return report
    other = _identify_as_named(reg, label, unwrapped, config, metadata, **options)
    if _rank(other) <= _rank(report):
        return report
    other.wrapper_prefix = wrapper
    return other


#: The prefixes training wrappers add to every name of a state dict saved as it is, and
#: what adds each.
_WRAPPERS = {"_orig_mod.": "torch.compile", "module.": "DDP or DataParallel"}


def _unwrapped(tensors) -> tuple[str | None, list]:
    """(the wrappers' prefixes every tensor name starts with, in order, or None; the
    records under the names less them). Nested wrappers stack (``module._orig_mod.``)."""
    from zoo.checkpoint.hf import TensorInfo

    tensors = list(tensors)
    wrapper = ""
    while tensors and (
        head := next((w for w in _WRAPPERS if all(t.name.startswith(w) for t in tensors)), None)
    ):
        wrapper += head
        tensors = [
            TensorInfo(t.name[len(head) :], t.dtype, tuple(t.shape), t.nbytes, t.digest)
            for t in tensors
        ]
    return wrapper or None, tensors


def _wrappers(prefix: str) -> str:
    """What adds ``prefix`` (one wrapper's or several stacked) to a state dict's names."""
    found = []
    while prefix:
        head = next(w for w in _WRAPPERS if prefix.startswith(w))
        found.append(_WRAPPERS[head])
        prefix = prefix[len(head) :]
    return " inside ".join(reversed(found))  # the outermost wrapper's prefix comes first


def _identify_as_named(
    reg,
    label: str,
    tensors,
    config,
    metadata,
    *,
    rounding: bool = True,
    ancestry: bool = True,
    among: int | None = None,
) -> AuditReport:
    """The verdict on a file's tensor records, under their names. ``rounding``: look for
    the float32 records a bf16 or fp16 file rounds (reads blobs, may re-derive);
    ``ancestry``: walk the lineage of the artifact found (both left out where only the
    match matters); ``among``: compare the file with this artifact only."""
    from zoo.checkpoint import manifest_hash
    from zoo.checkpoint.manifest import CONFIG_BUFFERS
    from zoo.db import queries  # here: a client rebuilds an AuditReport without it
    from zoo.db.models import Artifact

    from .lineage import lineage

    path = label
    file_tensors = {t.name: t.digest for t in tensors}
    file_dtypes = {t.name: t.dtype for t in tensors}
    file_shapes = {t.name: tuple(t.shape) for t in tensors}
    fills = _fill_digests(tensors)
    # Only floating-point tensors are evidence of where a file came from: integer and bool
    # ones are mostly buffers (position ids, causal masks) that every model of a config
    # shares, as are the floating-point buffers computed from the config alone.
    floating = {
        t.name
        for t in tensors
        if t.dtype.startswith(("F", "BF")) and not t.name.endswith(CONFIG_BUFFERS)
    }
    content = manifest_hash(config, tensors) if config is not None else None
    claimed = _claim(metadata or {})

    with reg.session() as session:
        row = None
        if content is not None:
            row = _named_by_file(
                [r for k in queries.KINDS if (r := queries.find_by_content(session, k, content))],
                claimed,
            )
        # Only tensors that can tell checkpoints apart are evidence of where a file came
        # from: matrices and up, not all zeros or ones. A vector (a bias, a norm gain) is
        # often a constant of any value (gains of ones resized raw are all 2.0), which
        # unrelated checkpoints share.
        evidence = {
            n: d
            for n, d in file_tensors.items()
            if n in floating and d not in fills and len(file_shapes[n]) >= 2
        }
        if among is None and row is None:  # a save_pretrained copy: what it copies
            among = _copied(session, tensors, config)[1]
        candidates: dict[int, int] = (
            queries.artifacts_with_digests(session, evidence.values(), limit=_CANDIDATES)
            if among is None
            else {among: len(evidence)}
        )
        # The file's metadata is only its word: it names an artifact where the file's
        # tensors point to none (a fine-tune that changed every matrix) and breaks ties
        # among those they point to, never over the checkpoint whose tensors it holds (a
        # stale or forged claim).
        claimed_row = None
        if row is None and claimed:
            claimed_row = _named_by_file(list(session.scalars(_by_hash(claimed[1]))), claimed)
            if claimed_row is not None and among is None:
                candidates.setdefault(claimed_row.id, 0)
        best, readers = row, {}
        if best is None and candidates:
            # The most of the file's evidence held under the file's names, then the fewest
            # recorded tensors the file lacks or holds otherwise, or holds beyond them: a
            # 2-layer copy of a 4-layer source's first layers is the 2-layer checkpoint, a
            # source is not a depth grow that repeats its layers, though each holds every
            # tensor, and a copy of a checkpoint that adds norm gains to another's
            # matrices is that checkpoint, not the other with the gains extra.
            # Names are compared as the artifact's (see _renaming): a base model saved on its
            # own is its artifact's size, not another's that happens to share its names.
            ranked = sorted(candidates.items(), key=lambda kv: (-kv[1], kv[0]))
            best_id, best_score = None, None
            for artifact_id, shared in ranked:
                records = queries.tensor_records(session, artifact_id)
                names = _renaming(records, file_tensors, _family_name(session, artifact_id))[2]
                mine = _renamed(file_tensors, names)
                unmatched = len(records) - _overlap(records, mine)
                unmatched += len(mine.keys() - {r.name for r in records})
                held = _overlap(records, _renamed(evidence, names))
                # Where none holds the file's matrices under their names (a model saved
                # inside a module of the user's own, every name prefixed), the most of its
                # bytes held under other names is the evidence, not the fewest records.
                score = (held, 0 if held else shared, -unmatched)
                named = claimed_row is not None and artifact_id == claimed_row.id
                if best_score is None or score > best_score or (score == best_score and named):
                    best_id, best_score = artifact_id, score
            best = session.get(Artifact, best_id)
            # Bytes held only under other names (an unrelated model that shares a matrix
            # or two, say a frozen embedding) are weaker evidence than the file's own
            # names: a cast copy of another checkpoint is looked for first, then the
            # artifact the file's metadata names.
            if best_score[0] == 0:
                cast, cast_readers = None, {}
                if rounding:
                    cast, cast_readers = _by_rounding(reg, session, tensors, evidence, config)
                if cast is not None:
                    best, readers = cast, cast_readers
                elif claimed_row is not None:
                    best = claimed_row
        if best is None and rounding:  # no byte in common: a copy cast down from float32?
            best, readers = _by_rounding(reg, session, tensors, evidence, config)
        if best is not None:
            best = _named_by_file([best, *queries.coinciding(session, best)], claimed) or best
        best_info = queries.to_info(session, best, same_content=True) if best else None
    if best_info is None:
        return AuditReport(str(path), "unknown")

    recorded = {t.name: t for t in best_info.tensors}
    dropped, added, names = _renaming(best_info.tensors, file_tensors, best_info.family)
    norm_names_differ = any(_legacy(f) != _legacy(a) for f, a in names.items())
    file_tensors = _renamed(file_tensors, names)
    file_dtypes = _renamed(file_dtypes, names)
    file_shapes = _renamed(file_shapes, names)
    # A tensor the file holds rounded from the recorded float32 one is compared as that
    # record: the cast changed its bytes, not where it came from.
    as_written = {n: (d, file_dtypes[n], file_shapes[n]) for n, d in file_tensors.items()}
    read = readers.get(best_info.id) or _recorded_bytes(reg, best_info)
    rounded = _rounded(read, recorded, tensors, names) if rounding else {}
    for name, record in rounded.items():
        file_tensors[name], file_dtypes[name] = record.digest, record.dtype
    is_buffer = _buffer_test(best_info.family)

    def same(name: str) -> bool:  # the recorded tensor, bytes, dtype and shape alike
        theirs = recorded.get(name)
        return theirs is not None and (
            file_tensors.get(name),
            file_dtypes.get(name),
            file_shapes.get(name),
        ) == (theirs.digest, theirs.dtype, tuple(theirs.shape))

    # A tie is one tensor under two names, which a file may write once (the copy missing)
    # or twice (the copy extra): only the pairs transformers ties under this config (an
    # LM head and its word embedding), the partner held unchanged. Any other tensor the
    # file lacks or adds is a difference, even where its bytes equal a tensor held (a
    # layer deleted from a depth grow that repeats layers, a norm gain of ones):
    # transformers would load it at random, or it is not the artifact's.
    alone = set(recorded) ^ set(file_tensors)
    partners = (
        _tied_partners(best_info.family, best_info.config or config or {}, alone | set(recorded))
        if alone
        else {}
    )

    def tied(name: str) -> bool:
        partner = partners.get(name)
        if partner is None or not same(partner):
            return False
        if name in recorded:  # recorded twice, written once
            a, b = recorded[name], recorded[partner]
            return (a.digest, a.dtype, tuple(a.shape)) == (b.digest, b.dtype, tuple(b.shape))
        return partner in as_written and as_written[name] == as_written[partner]

    not_compared = set()
    differing, missing, extra = [], [], []
    for name in sorted(set(recorded) | set(file_tensors)):
        mine, theirs = file_tensors.get(name), recorded.get(name)
        if same(name):
            continue
        if theirs is None:  # extra: a buffer, or a tied copy of a recorded tensor
            dtype, counted, into = file_dtypes[name], not tied(name), extra
        elif mine is None:  # missing: a buffer, or tied to a tensor the file has
            dtype, counted, into = theirs.dtype, not tied(name), missing
        else:  # held by both under one name: a difference whatever its dtype
            dtype, counted, into = theirs.dtype, True, differing
        if counted and not is_buffer(name, dtype):
            into.append(name)
        else:
            not_compared.add(name)
    status = "known" if not (differing or missing or extra) else "modified"
    rounded_to = sorted({t.dtype for t in tensors if names.get(t.name, t.name) in rounded})
    if best_info.deleted and status == "known":  # its rows stay until gc
        return AuditReport(
            str(path),
            "removed",
            best_info,
            not_compared=sorted(not_compared),
            rounded_to=rounded_to,
            prefix_dropped=dropped,
            prefix_added=added,
            norm_names_differ=norm_names_differ,
        )
    report = AuditReport(
        str(path),
        status,
        best_info,
        differing,
        missing,
        extra,
        # The file's config over the recorded tensors: its hash differs only where the
        # config does (a tie written differently changes the file's own hash, not this).
        config_differs=status == "known"
        and config is not None
        and manifest_hash(config, best_info.tensors) != best_info.content_hash,
        not_compared=sorted(not_compared),
        rounded_to=rounded_to,
        prefix_dropped=dropped,
        prefix_added=added,
        # Everything it lacks is outside the base model: the head, left behind.
        head_dropped=dropped is not None
        and bool(missing)
        and not any(n.startswith(dropped) for n in missing),
        norm_names_differ=norm_names_differ,
        named_by_file=claimed is not None
        and (claimed[0] == best_info.name or claimed[1] == best_info.content_hash),
        # A removed artifact's ancestry is no longer served.
        lineage=None
        if best_info.deleted or not ancestry
        else lineage(reg, best_info.name, up=True, down=False),
    )
    return report


#: Artifacts compared with a file, those holding the most of its matrices first, then the
#: oldest: a matrix thousands of artifacts share (a frozen embedding, one base's weights
#: under many configs) would otherwise make every import and audit read them all.
_CANDIDATES = 16
#: Artifacts holding a file's very weights whose configs are compared with the file's
#: where none has its copy key, oldest first (see :func:`_copied`).
_SAME_WEIGHTS = 16


@dataclass(frozen=True)
class Relative:
    """A registered checkpoint that a new import is made of, every weight unchanged.

    Attributes:
        how: ``copy``, a ``save_pretrained`` copy of ``artifact`` (the import is recorded
            on it); or ``backbone``, its base model saved on its own (a new source, with
            a ``backbone`` edge from ``artifact``).
        prefix: for a backbone, the base-model prefix its names lack (``"bert."``).
        head: for a backbone, the artifact's tensors it lacks (the head; none for a tied
            decoder's).
        added: for a backbone, the tensors it holds that the artifact lacks (a layer the
            base model adds, such as BERT's pooler, at random).
    """

    how: str
    artifact: ArtifactInfo
    prefix: str | None = None
    head: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    def edge_recipe(self) -> dict[str, Any]:
        """What a backbone edge records: how its names and tensors relate to the parent's."""
        return {
            "note": "its base model saved on its own, unchanged",
            "prefix": self.prefix,
            "head": list(self.head),
            "added": list(self.added),
        }


def relative_of(reg, tensors, config) -> Relative | None:
    """The registered checkpoint (a source or a derived one) that a checkpoint with
    ``tensors`` (records) and ``config`` is made of unchanged, and how (see
    :class:`Relative`); None when there is none.

    A ``copy``: every weight is the artifact's, under its name, dtype, shape and bytes
    (the buffers transformers rebuilds and the tied copies it writes once aside), and the
    config is its own but for what transformers writes on every save
    (:data:`~zoo.checkpoint.manifest.SAVE_KEYS`,
    and ``tie_word_embeddings`` written out at its default). A ``backbone``: every tensor
    of the artifact's base model is held unchanged under the artifact's names less the
    family's base-model prefix, and everything it lacks is outside that prefix (the
    head); its config is that of another architecture, so it is not compared. Bytes are
    compared exactly: a copy rounded to bf16 is none."""
    if not isinstance(config, dict):
        return None
    from zoo.db import queries

    matrices = [t for t in tensors if len(t.shape) >= 2 and t.dtype.startswith(("F", "BF"))]
    if not matrices:
        return None
    probe = max(matrices, key=lambda t: (t.nbytes, t.name))
    among = None
    with reg.session() as session:
        # Where artifacts hold these very weights under these names, the file copies the
        # one whose config is its own, or is, under another config, the base model of the
        # task model one of them was saved from (a base model's config is not compared),
        # or is neither: no comparison. Otherwise a relative holds the file's largest
        # matrix: without one, no comparison either (each an indexed look-up, where the
        # whole comparison would cost each new import).
        held, among = _copied(session, tensors, config)
        if held and among is None:
            among = queries.backbone_parent(session, held)
            if among is None:
                return None
        if not held and not queries.artifacts_with_digests(session, [probe.digest], limit=1):
            return None
    report = _identify(
        reg, "copy", tensors, config, None, rounding=False, ancestry=False, among=among
    )
    found = report.artifact
    if found is None or found.kind not in ("source", "derived") or report.rounded_to:
        return None
    if (
        report.prefix_dropped
        and not (report.prefix_added or report.wrapper_prefix)
        and not found.deleted
    ):
        whole = report.status == "known" or (report.head_dropped and not report.differing)
        if whole:
            return Relative(
                "backbone",
                found,
                prefix=report.prefix_dropped,
                head=tuple(report.missing),
                added=tuple(report.extra),
            )
        return None
    if (
        report.status not in ("known", "removed")
        or report.prefix_dropped
        or report.prefix_added
        or report.norm_names_differ  # not under the artifact's names: a checkpoint of its own
        or report.wrapper_prefix
        or not _same_config(found.config, config)
    ):
        return None
    return Relative("copy", found)


def _copied(session, tensors, config) -> tuple[list[int], int | None]:
    """The first :data:`_SAME_WEIGHTS` sources or derived checkpoints, oldest first, that
    hold the very weights of ``tensors`` under their names, and the one a file with them
    and ``config`` copies (its config the same but for what every save writes): found by
    its copy key (one indexed look-up, however many share the weights), else the oldest
    of those whose config differs only by keys one side lacks at their default; None
    when none does."""
    from zoo.checkpoint.manifest import copy_key, weights_key
    from zoo.db import queries

    weights = weights_key(tensors)
    if weights is None or not isinstance(config, dict):
        return [], None
    same_weights = queries.artifacts_with_weights(session, weights, limit=_SAME_WEIGHTS)
    if not same_weights:
        return [], None
    found = queries.artifact_with_copy_key(session, copy_key(config, weights))
    if found is None:
        found = next(
            (i for i, c in same_weights if c and _same_config(json.loads(c), config)), None
        )
    return [i for i, _ in same_weights], found


def _same_config(recorded: dict[str, Any], copy: dict[str, Any]) -> bool:
    """Whether two configs describe the same model as transformers reads them: equal but
    for what every save writes, a key one of them lacks holding its model type's default
    (a newer transformers writes out defaults an older one left implicit)."""
    from zoo.checkpoint.manifest import as_saved

    a, b = as_saved(recorded), as_saved(copy)
    if a == b:
        return True
    if any(k in b and b[k] != v for k, v in a.items()):
        return False  # a value changed
    differ = a.keys() ^ b.keys()
    defaults = _config_defaults(str(recorded.get("model_type")))
    return all(k in defaults and defaults[k] == (a[k] if k in a else b[k]) for k in differ)


@functools.cache
def _config_defaults(model_type: str) -> dict[str, Any]:
    """transformers' defaults for a model type's config (imported only here: a copy's
    check, once every weight matched)."""
    try:
        import transformers

        return transformers.AutoConfig.for_model(model_type).to_dict()
    except (ImportError, ValueError, KeyError):
        return {}


# Float32 records of the file's smallest rounded matrix, each read and rounded, that a
# search for the checkpoint a rounded file came from reads at most: a library of
# thousands of sizes of one family records that tensor many times over.
_ROUNDING_SCREENS = 256
_SCREENED = 3  # the file's smallest bf16 or fp16 matrices looked for
# Artifacts, equally close to the file in names and shapes, whose every differing tensor
# is compared with the file's (newest first) to tell a fine-tune from its base.
_COMPARED = 8
# Virtual sizes (weights never stored) re-derived to be compared, when no stored
# record rounds to the file: the newest whose tensor names and shapes are the file's.
_REDERIVED = 3


def _by_rounding(reg, session, tensors, evidence: dict[str, str], config):
    """The artifact a file cast down to bf16 or fp16 came from, when it shares no bytes
    with any under its own names: among the artifacts recording one of the file's
    smallest bf16 or fp16 matrices in float32 under the same name and shape, or that name
    less or plus the family's base-model prefix (of the file's family), one whose record,
    rounded, is the file's tensor; the one whose tensor names and shapes the file matches
    best. Returns (artifact row or None, {artifact id: bytes reader})."""
    from zoo.checkpoint.casts import ROUNDED_FROM
    from zoo.db import queries
    from zoo.db.models import Artifact

    narrow = sorted(
        (t for t in tensors if t.name in evidence and t.dtype in ROUNDED_FROM),
        key=lambda t: (t.nbytes, t.name),
    )[:_SCREENED]  # more than one: a fine-tune may have changed one
    family = _family_of(config)
    prefix = _base_prefix(family)
    found: set[int] = set()
    virtual: set[int] = set()
    for screen in narrow:
        # Its name, or the artifact's name for it under the family's base-model prefix:
        # a base model saved on its own drops it, a task model built on one adds it.
        names = [screen.name]
        if prefix is not None:
            dot = f"{prefix}."
            names += [screen.name[len(dot) :]] if screen.name.startswith(dot) else []
            names += [dot + screen.name]
        stored: dict[str, list[int]] = {}
        for name in names:
            for artifact_id, digest, is_virtual in queries.artifacts_recording(
                session, name, screen.shape, ROUNDED_FROM[screen.dtype], family
            ):
                if is_virtual:
                    virtual.add(artifact_id)
                else:
                    stored.setdefault(digest, []).append(artifact_id)
        # Newest first: a file audited is most often a recent one's copy, and the bound
        # must not keep the newest out of reach behind a library's older sizes.
        newest = sorted(stored, key=lambda d: max(stored[d]), reverse=True)
        for digest in newest[:_ROUNDING_SCREENS]:
            if _rounds(_stored_bytes(reg, digest), screen):
                found.update(stored[digest])
    shapes = {t.name: tuple(t.shape) for t in tensors}

    def unmatched(artifact_id: int) -> int:
        records = queries.tensor_records(session, artifact_id)
        same = sum(1 for r in records if shapes.get(r.name) == tuple(r.shape))
        return len(records) + len(shapes) - 2 * same

    readers = {}
    if not found:  # a size materialized to a folder: its recipe gives its weights
        # Only those with the file's every name and shape are re-derived (whole): anyone
        # who may audit could otherwise have a server derive models for nothing.
        exact = [i for i in virtual if unmatched(i) == 0]
        for artifact_id in sorted(exact, reverse=True)[:_REDERIVED]:
            info = queries.to_info(session, session.get(Artifact, artifact_id))
            read = readers[artifact_id] = _recorded_bytes(reg, info)
            records = {t.name: t for t in info.tensors}
            if any(_rounds(read(records[t.name]), t) for t in narrow if t.name in records):
                found.add(artifact_id)
                break
    if not found:
        return None, readers
    best = min(unmatched(i) for i in found)
    tied = sorted((i for i in found if unmatched(i) == best), reverse=True)[:_COMPARED]
    return session.get(Artifact, _most_rounded(reg, session, tensors, tied, family)), readers


def _most_rounded(reg, session, tensors, candidates: list[int], family: str | None) -> int:
    """Of artifacts whose names and shapes the file matches equally well (stored ones,
    their ids newest first), the one whose records the most of the file's bf16 or fp16
    tensors round to, the first registered of those that tie: a fine-tune that kept its
    base's smallest matrices is told from its base by the tensors it changed. Only the
    tensors where the candidates' records differ are read; the rest count alike."""
    from zoo.checkpoint.casts import ROUNDED_FROM
    from zoo.db import queries

    if len(candidates) == 1:
        return candidates[0]
    narrow = [t for t in tensors if t.dtype in ROUNDED_FROM]
    records: dict[int, dict[str, Any]] = {}
    for i in candidates:
        rows = queries.tensor_records(session, i)
        names = _renaming(rows, (t.name for t in tensors), family)[2]
        by_name = {r.name: r for r in rows}
        records[i] = {t.name: by_name.get(names.get(t.name, t.name)) for t in narrow}
    checked: dict[tuple[str, str], bool] = {}

    def rounds(t, record) -> bool:
        if (
            record is None
            or record.dtype != ROUNDED_FROM[t.dtype]
            or tuple(record.shape) != tuple(t.shape)
        ):
            return False
        key = (t.name, record.digest)
        if key not in checked:
            checked[key] = _rounds(_stored_bytes(reg, record.digest), t)
        return checked[key]

    def digest(i: int, name: str) -> str | None:
        record = records[i][name]
        return None if record is None else record.digest

    telling = [t for t in narrow if len({digest(i, t.name) for i in candidates}) > 1]
    score = {i: sum(rounds(t, records[i][t.name]) for t in telling) for i in candidates}
    return min(candidates, key=lambda i: (-score[i], i))


def _rounded(read, recorded: dict[str, Any], tensors, names: dict[str, str]) -> dict[str, Any]:
    """Name -> the record of each file tensor that is its recorded float32 tensor rounded
    to the file's bf16 or fp16 (``read(record)``: the record's bytes; ``names``: the file's
    names that are the artifact's under another, see :func:`_renaming`)."""
    from zoo.checkpoint.casts import ROUNDED_FROM

    out = {}
    for t in tensors:
        record = recorded.get(names.get(t.name, t.name))
        if (
            record is not None
            and ROUNDED_FROM.get(t.dtype) == record.dtype
            and tuple(record.shape) == tuple(t.shape)
            and _rounds(read(record), t)
        ):
            out[record.name] = record
    return out


def _rounds(data, tensor) -> bool:
    """Whether float32 ``data``, rounded to ``tensor``'s dtype, is its bytes."""
    from zoo.checkpoint.casts import rounded_digest

    return data is not None and rounded_digest(data, tensor.dtype) == tensor.digest


def _stored_bytes(reg, digest: str):
    """A blob's bytes; None when it is missing or damaged (``zoo verify`` reports it)."""
    from zoo.errors import BlobCorruptError, BlobMissingError

    try:
        return reg.store.get(digest)
    except (BlobMissingError, BlobCorruptError):
        return None


def _recorded_bytes(reg, info: ArtifactInfo):
    """``record -> bytes or None``: an artifact's recorded tensors' bytes, from the store,
    or for a virtual one (its weights never stored) re-derived once by its recipe, as
    `zoo rederive` does; None where neither gives them (a recipe that fails, a removed
    artifact)."""
    from zoo.errors import ZooError

    from .tensors import raw_bytes

    state: dict | None = None

    def read(record):
        nonlocal state
        if not info.virtual:
            return _stored_bytes(reg, record.digest)
        if state is None:
            from .materialize import virtual_weights

            try:
                state = virtual_weights(reg, info, info.tensors, "cpu", None)
            except ZooError:
                state = {}
        t = state.get(record.name)
        return None if t is None else raw_bytes(t)

    return read


def _family_of(config) -> str | None:
    from zoo.errors import UnknownFamilyError
    from zoo.families import family_for_config

    try:
        return family_for_config(config).name if config is not None else None
    except UnknownFamilyError:
        return None


def _verify(reg, report: AuditReport) -> None:
    """Re-derive the derived checkpoint ``report`` names and say whether it reproduced."""
    from zoo.errors import ZooError

    from .materialize import rederive

    if report.artifact is None or report.artifact.kind != "derived" or report.artifact.deleted:
        return  # a removed artifact's recipe is not re-derived (rederive refuses it)
    try:
        rederive(reg, report.artifact.name, return_weights=False)
        report.verified = report.status == "known"
        if report.status != "known":
            report.verify_error = "the recipe re-derives, but this file differs from it"
    except ZooError as exc:
        report.verified = False
        report.verify_error = str(exc)


def _buffer_test(family_name: str | None):
    """``(name, dtype) -> bool``: whether a tensor is a buffer transformers computes from
    the config, whose presence and bytes are no evidence (one version saves it, another
    drops it; every model of one config holds the same bytes): the floating-point buffers
    computed from the config, the buffers the family declares (see
    :meth:`zoo.families.Family.is_buffer`), and integer ids and bool or uint8 masks under
    the names transformers gives those buffers (:func:`~zoo.checkpoint.manifest.rebuilt_buffer`).
    Every other tensor is a weight, whatever its dtype (a quantized checkpoint's integer
    ``qweight``, or its int32 ``bias``)."""
    from zoo.checkpoint.manifest import rebuilt_buffer
    from zoo.errors import UnknownFamilyError
    from zoo.families import get_family

    try:
        family = get_family(family_name) if family_name else None
    except UnknownFamilyError:
        family = None

    def is_buffer(name: str, dtype: str) -> bool:
        if rebuilt_buffer(name, dtype):
            return True
        return family is not None and family.is_buffer(name)

    return is_buffer


def _tied_partners(family_name: str | None, config, names) -> dict[str, str]:
    """Of ``names`` (an artifact's and a file's), each one transformers ties to another
    under ``config`` -> the name it is tied to: the family's ties (see
    :meth:`zoo.families.Family.tied_partners`), or, for a model zoo has no family for,
    the tie table of its architecture's transformers class."""
    from zoo.errors import UnknownFamilyError
    from zoo.families import get_family
    from zoo.families._common import ties_word_embeddings

    try:
        family = get_family(family_name) if family_name else None
    except UnknownFamilyError:
        family = None
    if family is not None:
        return family.tied_partners(config, names)
    archs = config.get("architectures")
    if not ties_word_embeddings(config) or not isinstance(archs, list):
        return {}
    ties = {}
    for arch in archs:
        if isinstance(arch, str) and arch.isidentifier():
            ties.update(_transformers_ties(arch))
    return {copy: tied for copy, tied in ties.items() if copy in names and tied in names}


@functools.lru_cache(maxsize=256)  # bounded: a client's manifest names the architecture
def _transformers_ties(architecture: str) -> dict[str, str]:
    """``{tied tensor: the tensor it is tied to}`` of a transformers model class (its
    ``_tied_weights_keys``); {} where transformers or the class is not there (imported
    only here: an audit whose file lacks or adds a tensor, of a model zoo has no family
    for)."""
    try:
        import transformers

        keys = getattr(transformers, architecture)._tied_weights_keys
    except (AttributeError, ImportError, RuntimeError):
        return {}
    if not isinstance(keys, dict):
        return {}
    return {str(k): str(v) for k, v in keys.items()}


def _named_by_file(rows: list, claimed: tuple[str, str] | None):
    """Of artifacts with one content, the one the file's metadata names, else the first
    registered (where that content entered the registry)."""
    rows = sorted(rows, key=lambda r: r.id)
    if not rows:
        return None
    if claimed is not None:
        name, content_hash = claimed
        for r in rows:
            if r.name == name or (r.kind == "derived" and r.content_hash == content_hash):
                return r
    return rows[0]


def _fill_digests(tensors) -> set[str]:
    """Digests of the file's tensors that are all zeros or all ones. Unrelated models share
    these (biases and norm gains still at their initial values), so a match on them says
    nothing about where a file came from. Hashed from a 1 MiB pattern, once per
    (dtype, size), without materializing the fill."""
    import hashlib

    import torch

    from zoo.checkpoint.safetensors_format import DTYPE_ITEMSIZE, torch_dtype

    from .tensors import raw_bytes

    def streamed(chunk: bytes, nbytes: int) -> str:
        h = hashlib.sha256()
        full, rest = divmod(nbytes, len(chunk))
        for _ in range(full):
            h.update(chunk)
        h.update(chunk[:rest])
        return h.hexdigest()

    out: set[str] = set()
    for code, nbytes in {(t.dtype, t.nbytes) for t in tensors}:
        try:
            dtype = torch_dtype(code)
        except InvalidInputError:  # a dtype this torch lacks: no fill of it to recognize
            continue
        count = (1 << 20) // DTYPE_ITEMSIZE[code]
        ones = bytes(raw_bytes(torch.ones(count, dtype=dtype)))
        out.add(streamed(bytes(len(ones)), nbytes))
        out.add(streamed(ones, nbytes))
    return out


def _renaming(records, file_names, family: str | None):
    """(prefix dropped, prefix added, file name -> the artifact's name) for a file whose
    tensor names are an artifact's (``records``) less or plus a base-model prefix, as
    transformers writes them when a task model's base model is saved on its own or a
    task model is built on a base model: the family's prefix (``bert``, ``model``,
    ``transformer``...), or, for a family zoo does not resize, the first part of most of
    the artifact's names. The prefix that renames the most names wins; none: (None,
    None, {}). Names are compared as transformers loads them (:func:`as_loaded`): a
    LayerNorm's ``gamma`` in one is its ``weight`` in the other."""
    from collections import Counter

    from zoo.families._common import as_loaded

    actual: dict[str, str] = {}  # each recorded name as loaded -> the artifact's name
    for r in records:
        actual.setdefault(as_loaded(r.name), r.name)
    held: dict[str, str] = {}  # each file name as loaded -> the file's name
    for n in sorted(file_names):
        held.setdefault(as_loaded(n), n)
    recorded, loaded = set(actual), set(held)
    prefixes = set()
    if (known := _base_prefix(family)) is not None:
        prefixes.add(known)
    firsts = Counter(n.split(".", 1)[0] for n in recorded if "." in n).most_common(1)
    # A wrapper's prefix (an artifact imported from a wrapped state dict) is not a base
    # model's: a file is compared without it only as a wrapped copy (see _identify).
    if firsts and 2 * firsts[0][1] >= len(recorded) and f"{firsts[0][0]}." not in _WRAPPERS:
        prefixes.add(firsts[0][0])
    best: tuple[str | None, str | None, dict[str, str]] = (None, None, {})
    for prefix in sorted(prefixes):
        dot = f"{prefix}."
        dropped = {
            n: dot + n for n in loaded - recorded if dot + n in recorded and dot + n not in loaded
        }
        added = {
            n: n[len(dot) :]
            for n in loaded - recorded
            if n.startswith(dot) and n[len(dot) :] in recorded and n[len(dot) :] not in loaded
        }
        for option in ((dot, None, dropped), (None, dot, added)):
            if len(option[2]) > len(best[2]):
                best = option
    names = {}
    for n, name in held.items():
        theirs = actual.get(best[2].get(n, n))
        if theirs is not None and theirs != name:
            names[name] = theirs
    return best[0], best[1], names


def _legacy(name: str) -> bool:
    """Whether ``name`` is a LayerNorm's TensorFlow-era name (``LayerNorm.gamma``...)."""
    from zoo.families._common import as_loaded

    return as_loaded(name) != name


def _renamed(by_name: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(n, n): v for n, v in by_name.items()}


def _base_prefix(family: str | None) -> str | None:
    """The prefix of the base model inside a task model of ``family``, where zoo knows it."""
    from zoo.errors import UnknownFamilyError
    from zoo.families import get_family

    if family is None:
        return None
    try:
        return getattr(get_family(family), "base_prefix", None)
    except UnknownFamilyError:
        return None


def _family_name(session, artifact_id: int) -> str | None:
    from zoo.db.models import Artifact

    row = session.get(Artifact, artifact_id)
    return row.family if row is not None else None


def _overlap(records, file_tensors: dict[str, str]) -> int:
    return sum(1 for t in records if file_tensors.get(t.name) == t.digest)


def _claim(metadata: dict[str, str]) -> tuple[str, str] | None:
    """(name, content hash) of the derived checkpoint a zoo output says it is."""
    try:
        claim = json.loads(metadata.get("zoo.derived", "null") or "null")
        return str(claim["name"]), str(claim["content_hash"])
    except (ValueError, TypeError, KeyError, RecursionError):
        return None


def _by_hash(content_hash: str):
    from sqlalchemy import select

    from zoo.db.models import Artifact

    return select(Artifact).where(Artifact.content_hash == content_hash)
