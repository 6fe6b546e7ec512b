"""Client mode: the registry's API over HTTP, for users who hold a token, not credentials.

With ``ZOO_ENDPOINT`` (and ``ZOO_TOKEN``) set, :func:`zoo.connect` returns a
:class:`RemoteRegistry`: the same methods as :class:`zoo.Registry` (less the server's own:
schema migrations, token checks, audits of a manifest), returning the same records and
raising the same error classes (the server names the class in its answer), so the CLI
prints the same output and exits with the same codes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from zoo import errors
from zoo.config import endpoint_from_env, redact_url, timeout_from_env
from zoo.errors import (
    ChangedWhileReadError,
    ConflictError,
    InvalidInputError,
    NoSuchRouteError,
    ServerUnavailableError,
    ZooError,
)

# What a checkpoint folder upload carries besides the .safetensors files and the side files
# (zoo.checkpoint.side_files): what a local import reads, nothing else.
_UPLOADED = ("config.json", "model.safetensors.index.json")
_OCTETS = "application/octet-stream"
_MAX_PAGE = 1000  # the server's largest page (zoo.server.app)


def _error_from(response) -> ZooError:
    """The zoo error class the server named, with its message."""
    try:
        body = response.json()["error"]
        name, message = body["class"], body["message"]
    except (ValueError, KeyError, TypeError):
        return ServerUnavailableError(
            f"The server answered {response.status_code} without a zoo error: "
            f"{response.text[:200]!r}."
        )
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ZooError)):
        # An error of the server's environment (its database, its disk): same exit code.
        cls = type(name, (ZooError,), {"exit_code": body.get("exit_code", 1)})
    params = body.get("params")
    if not (isinstance(params, list) and all(isinstance(p, str) for p in params)):
        return cls(message)
    # The server names its JSON fields; the caller here, Python parameters (and the CLI,
    # through them, its flags).
    exc = cls(errors.from_json_words(message, params))
    exc.params = tuple(params)
    return exc


class RemoteRegistry:
    """A zoo server's registry, through its REST API (see :mod:`zoo.server`)."""

    def __init__(self, endpoint: str, token: str | None = None) -> None:
        self.endpoint = endpoint.strip().rstrip("/")
        shown = redact_url(endpoint[:100])
        try:
            parts = urlsplit(self.endpoint)
            parts.port  # noqa: B018 -- a port that is not a number fails here
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(
                f"The zoo endpoint {shown!r} is not a valid http:// or https:// URL "
                "(ZOO_ENDPOINT, e.g. https://zoo.internal)."
            )
        # The token goes in a header; a secret in the URL would be printed with it.
        if "@" in parts.netloc or parts.query or parts.fragment:
            raise InvalidInputError(
                "The zoo endpoint (ZOO_ENDPOINT) holds a user name, a query or a fragment; "
                "give the server's address alone, and the token in ZOO_TOKEN."
            )
        self.timeout = timeout_from_env()
        # Around it, a line end a file or a shell left; inside it, no token has any.
        self.token = token.strip() if token else None
        if self.token and not all(c.isprintable() and not c.isspace() for c in self.token):
            raise InvalidInputError(
                "ZOO_TOKEN holds a space or a control character; set it to the secret alone, "
                "as `zoo token create` printed it."
            )

    def __repr__(self) -> str:
        return f"RemoteRegistry(endpoint={self.endpoint!r})"

    def __reduce__(self):
        # Sent to another process, a handle connects anew there: its HTTP connection
        # is this process's.
        return RemoteRegistry, (self.endpoint, self.token)

    @cached_property
    def _http(self):
        from zoo.transport import Transport

        headers = {"User-Agent": "zoo-client"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return Transport(self.endpoint, headers, self.timeout)

    def close(self) -> None:
        if "_http" in self.__dict__:
            self._http.close()

    def __enter__(self) -> RemoteRegistry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs) -> Any:
        from zoo.transport import TransportError

        try:
            response = self._http.request(method, path, **kwargs)
        except TransportError as exc:
            raise ServerUnavailableError(
                f"Cannot reach the zoo server at {self.endpoint}: {exc}."
            ) from None
        if response.status_code >= 400:
            raise _error_from(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def _download(self, artifact, out: Path, *, force: bool, max_shard_size=None) -> Path:
        """The artifact's files into ``out``, all or nothing (as zoo writes folders).

        Asked for by name, which one artifact holds (a content hash may be a source's and
        the same-size checkpoint derived from it, whose cards differ), and refused if the
        name now holds other content. The server's files come in its own shards (up to
        5GB); with ``max_shard_size`` they are downloaded beside ``out`` and re-split
        there (the checkpoint's size twice on disk meanwhile): the same tensors, so the
        same content hash."""
        from zoo.api import export

        base = f"/api/artifacts/{_q(artifact.name)}/files"
        listing = self._call("GET", base)
        if listing["content_hash"] != artifact.content_hash:
            raise ConflictError(
                f"{artifact.name} changed on the server while it was read "
                f"({artifact.content_hash[:12]} -> {listing['content_hash'][:12]}); ask again."
            )
        size = sum(meta["size"] for meta in listing["files"].values())
        export.check_room(out, size if max_shard_size is None else 2 * size)
        if max_shard_size is None:
            with export.staged(out, force=force) as temp:
                self._fetch_all(base, listing["files"], temp)
            return out
        with export.scratch(out) as raw:
            self._fetch_all(base, listing["files"], raw)
            return export.resharded(
                raw, out, force=force, max_shard_size=export.parse_size(max_shard_size)
            )

    def _fetch_all(self, base: str, files: dict[str, Any], folder: Path) -> None:
        import re

        for name, meta in files.items():
            # A module folder's file comes by its path in the folder; nothing the server
            # names may leave it.
            parts = name.split("/")
            if not all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", p) for p in parts):
                raise ServerUnavailableError(
                    f"The server listed a file {name[:80]!r} that is not a path of plain names "
                    "inside the folder; nothing was written."
                )
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            self._fetch(f"{base}/{_q(name)}", folder / name, meta)

    def _fetch(self, url: str, dest: Path, meta: dict[str, Any]) -> None:
        import hashlib

        from zoo.transport import TransportError

        h = hashlib.sha256()
        try:
            with self._http.stream("GET", url) as response, open(dest, "wb") as fh:
                if response.status_code >= 400:
                    raise _error_from(response.read())
                for chunk in response.iter_bytes(1 << 20):
                    h.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except TransportError as exc:
            raise ServerUnavailableError(f"Download of {url} failed: {exc}.") from None
        if h.hexdigest() != meta["sha256"]:
            raise errors.VerificationError(f"{dest.name} arrived damaged (sha256 differs).")

    # --- the Registry's public methods, over HTTP ------------------------------------------

    def import_checkpoint(
        self, source, *, name=None, revision=None, convert_bin=False, progress=False
    ):
        _flags(convert_bin=convert_bin)
        from zoo.hub import source_text
        from zoo.transport import FileChangedError, multipart_length

        # Refused here as a local import refuses it: "" would upload the current folder.
        path = Path(source_text(source)).expanduser()
        if path.exists():
            if revision:
                raise InvalidInputError(
                    "revision= applies to Hub repositories, not local paths.",
                    params=["revision"],
                )
            if not path.is_dir():
                from zoo.checkpoint.hf import needs_a_folder

                raise needs_a_folder(path)
            with contextlib.ExitStack() as stack:
                folder = stack.enter_context(_upload_folder(path, convert_bin=convert_bin))
                files = [
                    ("files", (name, stack.enter_context(open(f, "rb")), _OCTETS))
                    for name, f in folder
                ]
                # The server keeps where the folder was read, not its own staging copy.
                data = {"folder": _folder_name(path), "origin": _origin(path)}
                if name is not None:  # "" too: refused, as a local import refuses it
                    from zoo.checkpoint.names import validate_name

                    data["name"] = validate_name(name)
                self._check_upload(multipart_length(data, files))
                try:
                    body = self._call("POST", "/api/import/upload", files=files, data=data)
                except FileChangedError as exc:
                    # The upload ended short of its body: the server discarded it.
                    raise ChangedWhileReadError.of_import(path, f"{exc} to the server") from None
            return artifact_from_json(body)
        from zoo.hub import names_a_repo, not_a_source

        if not names_a_repo(os.fspath(source)):
            raise not_a_source(os.fspath(source))
        body = {"repo": os.fspath(source), "revision": revision, "name": name}
        body["convert_bin"] = convert_bin
        return artifact_from_json(self._call("POST", "/api/import", json=body))

    def _check_upload(self, size: int) -> None:
        """Refuse here, in the server's words, an upload of ``size`` bytes the server would
        refuse (over its --max-upload, or a token that may not import). It refuses the
        upload itself as soon as the Content-Length arrives and closes the connection:
        the client, still sending, would see a broken pipe or a reset, which may discard
        the answer."""
        # A server without the check refuses the upload as it is sent. Servers older than
        # NoSuchRouteError answer a route they lack as a missing artifact; this route names
        # none, so that answer means the same.
        with contextlib.suppress(NoSuchRouteError, errors.NotFoundError):
            self._call("GET", "/api/import/upload/check", params={"size": size})

    def import_checkpoints(self, sources, *, convert_bin=False, batch=200, progress=False):
        """Each folder uploaded and imported in turn (a server writes each as it arrives;
        ``batch`` is the local registry's, checked alike)."""
        _flags(convert_bin=convert_bin)
        from zoo.hub import batch_sources

        sources = batch_sources(sources, batch)
        return [self.import_checkpoint(s, convert_bin=convert_bin) for s in sources]

    def search(
        self,
        *,
        kind=None,
        family=None,
        include_deleted=False,
        name=None,
        min_layers=None,
        max_layers=None,
        min_hidden=None,
        max_hidden=None,
        derived_from=None,
        created_by=None,
        created_after=None,
        created_before=None,
        limit=50,
        after=None,
        newest_first=True,
    ):
        """A page of artifacts, as :meth:`zoo.Registry.search` answers it."""
        _flags(include_deleted=include_deleted, newest_first=newest_first)
        from zoo.db.entities import Page, check_search

        # Refused here in the local registry's words: sent as text, a filter of another
        # type (family=7) would be read by the server as its text and answered.
        bounds = {
            "min_layers": min_layers,
            "max_layers": max_layers,
            "min_hidden": min_hidden,
            "max_hidden": max_hidden,
        }
        limit, created_after, created_before = check_search(
            kind=kind,
            family=family,
            name=name,
            bounds=bounds,
            derived_from=derived_from,
            created_by=created_by,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            after=after,
        )
        filters = {
            **bounds,
            "derived_from": derived_from,
            "created_by": created_by,
            "created_after": created_after,
            "created_before": created_before,
        }
        if derived_from is not None:
            _q(derived_from)  # "" is no artifact, not "no filter"
        params = {
            "kind": kind,
            "family": family,
            "all": str(include_deleted).lower(),
            "q": name,
            "limit": limit or 0,
            "after": after,
            "oldest_first": str(not newest_first).lower(),
            **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in filters.items()},
        }
        params = {k: v for k, v in params.items() if v is not None}
        # The server answers at most _MAX_PAGE a request (or all, with 0): a larger page is
        # asked for in parts, each from the cursor the one before ended at.
        items: list = []
        while True:
            want = params["limit"] - len(items) if params["limit"] else 0
            body = self._call(
                "GET", "/api/artifacts", params={**params, "limit": min(want, _MAX_PAGE)}
            )
            items += [summary_from_json(a) for a in body["artifacts"]]
            if not want or len(items) >= params["limit"] or body["next"] is None:
                return Page(tuple(items), body["total"], body["next"])
            params["after"] = body["next"]

    def list(self, *, kind=None, family=None, include_deleted=False, **filters):
        """Every match, oldest first."""
        from zoo.api.arguments import check_list_filters

        check_list_filters(filters)  # as the local registry refuses them
        page = self.search(
            kind=kind,
            family=family,
            include_deleted=include_deleted,
            limit=None,
            newest_first=False,
            **filters,
        )
        return list(page.items)

    def show(self, name: str, *, include_deleted: bool = False):
        _flags(include_deleted=include_deleted)
        params = {"all": "true"} if include_deleted else None
        return artifact_from_json(self._call("GET", f"/api/artifacts/{_q(name)}", params=params))

    def tag(self, name: str, alias: str):
        return self.point_alias(name, alias)[0]

    def point_alias(self, name: str, alias: str):
        from zoo.checkpoint.names import validate_name

        validate_name(alias, "alias")  # first, as the local registry checks it
        body = self._call("POST", f"/api/artifacts/{_q(name)}/aliases", json={"alias": alias})
        return artifact_from_json(body["artifact"]), body.get("previous")

    def alias_history(self, alias: str, *, limit=None, after=None):
        from zoo.db.entities import AliasHistoryPage, AliasSetting, check_history_page

        missing = "No alias '' was ever set; `zoo show NAME` lists an artifact's aliases."
        path = f"/api/aliases/{_q(alias, missing, 'alias')}"
        limit, _ = check_history_page(limit, after)  # refused here, in the registry's words
        params = {"after": after} if after else {}
        # As search: a page larger than the server's is asked for in parts.
        settings: list = []
        while True:
            want = limit - len(settings) if limit else 0
            body = self._call("GET", path, params={**params, "limit": min(want, _MAX_PAGE)})
            settings += [
                AliasSetting(**{**s, "set_at": _time(s["set_at"])}) for s in body["history"]
            ]
            if not want or len(settings) >= limit or body.get("next") is None:
                return AliasHistoryPage(settings, body.get("next"))
            params["after"] = body["next"]

    def rm(self, name: str, *, cascade: bool = False):
        _flags(cascade=cascade)
        body = self._call("DELETE", f"/api/artifacts/{_q(name)}", params={"cascade": cascade})
        return [artifact_from_json(a) for a in body]

    def extract(
        self,
        source: str,
        *,
        method="dwt",
        wavelet=None,
        levels=None,
        keep=None,
        name=None,
        device=None,
        order="stored",
    ):
        from zoo.api.arguments import check_extract

        check_extract(
            method=method,
            wavelet=wavelet,
            levels=levels,
            keep=keep,
            order=order,
            name=name,
            device=device,
        )
        _q(source)
        # Registry.extract's own arguments: a misspelt one is Python's TypeError, as there.
        body = {"source": source, "method": method, "wavelet": wavelet, "levels": levels}
        body |= {"keep": keep, "name": name, "device": device, "order": order}
        # As materialize: None sent only where the default is not None.
        body = {k: v for k, v in body.items() if v is not None or k in ("method", "order")}
        return artifact_from_json(self._call("POST", "/api/extract", json=body))

    def materialize(
        self,
        name: str,
        *,
        layers,
        hidden,
        heads=None,
        intermediate=None,
        kv_heads=None,
        method=None,
        wavelet=None,
        rescale=None,
        seed=None,
        norm=None,
        depth=None,
        order=None,
        dtype="auto",
        device=None,
        out=None,
        force: bool = False,
        max_shard_size=None,
        store: bool = False,
        return_weights: bool = True,
    ):
        _flags(force=force, store=store, return_weights=return_weights)
        from zoo.api.arguments import check_materialize

        # Refused here as the local registry refuses them, in its words: sent, a value of
        # another type would be refused by the server's request model in its own.
        check_materialize(
            layers=layers,
            hidden=hidden,
            heads=heads,
            intermediate=intermediate,
            kv_heads=kv_heads,
            seed=seed,
            device=device,
            method=method,
            wavelet=wavelet,
            rescale=rescale,
            norm=norm,
            depth=depth,
            order=order,
            dtype=dtype,
        )
        out = _check_out(out, force, max_shard_size)
        _q(name)
        # Registry.materialize's own arguments: a misspelt or missing one is Python's
        # TypeError, as there, not a request the server refuses in its own words.
        request = {"name": name, "layers": layers, "hidden": hidden, "heads": heads}
        request |= {"intermediate": intermediate, "kv_heads": kv_heads, "method": method}
        request |= {"wavelet": wavelet, "rescale": rescale, "seed": seed, "norm": norm}
        request |= {"depth": depth, "order": order, "dtype": dtype, "device": device}
        request["store"] = store
        # An option left at None is not sent (a server older than it takes the request);
        # dtype's default is not None, so a None given for it is sent and refused.
        request = {k: v for k, v in request.items() if v is not None or k == "dtype"}
        body = self._call("POST", "/api/materialize", json=request)
        artifact = artifact_from_json(body["artifact"])
        try:
            written = self._written(artifact, out, force, max_shard_size)
        except KeyboardInterrupt:
            # Recorded on the server before the download began: stopped here, the command
            # must not read as one that changed nothing, as a local one stopped would.
            raise errors.InterruptedAfterWriting(
                f"interrupted after the server recorded {artifact.name}: it is kept there, "
                f"and {out} was not written (`reg.export({artifact.name!r}, out={str(out)!r})` "
                "writes it)"
            ) from None
        except errors.AuthenticationError as exc:
            # The token ended (or was revoked) while the server made the size: a request
            # begun before is finished, so it is recorded there all the same.
            raise errors.AuthenticationError(
                f"{exc} The server recorded {artifact.name} before: {out} was not written "
                f"(zoo export {artifact.name} --out DIR writes it, with a token in force)."
            ) from None
        # As the local registry: weights in memory only when no folder was written.
        weights = return_weights and out is None
        made = RemoteMaterialized(self, body["config"], artifact, written, weights)
        made.warnings = tuple(body.get("warnings", ()))  # a server older than them sends none
        return made

    def rederive(
        self,
        name: str,
        *,
        out=None,
        force: bool = False,
        device=None,
        max_shard_size=None,
        return_weights: bool = True,
    ):
        _flags(force=force, return_weights=return_weights)
        from zoo.api.arguments import check_device

        out = _check_out(out, force, max_shard_size)
        check_device(device)
        body = self._call("POST", f"/api/artifacts/{_q(name)}/rederive", json={"device": device})
        artifact = artifact_from_json(body["artifact"])
        written = self._written(artifact, out, force, max_shard_size)
        return RemoteMaterialized(
            self, artifact.config, artifact, written, out is None and return_weights
        )

    def export(self, name: str, *, out, force: bool = False, max_shard_size=None):
        _flags(force=force)
        if out is None:
            raise InvalidInputError("export writes a folder: give out=.", params=["out"])
        out = _check_out(out, force, max_shard_size)
        info = self.show(name)
        return self._download(info, out, force=force, max_shard_size=max_shard_size)

    def _written(self, artifact, out, force: bool, max_shard_size) -> Path | None:
        if out is None:
            return None
        return self._download(artifact, Path(out), force=force, max_shard_size=max_shard_size)

    def family_default(self, family: str):
        from zoo.families import get_family

        if not isinstance(family, str) or not family or "\x00" in family:
            get_family(family)  # refused in the local registry's words
        body = self._call("GET", f"/api/defaults/{quote(family, safe='')}")
        return None if body["learngene"] is None else artifact_from_json(body["learngene"])

    def set_default(self, family: str, name: str):
        from zoo.db.entities import check_lookup
        from zoo.families import get_family

        # What names no family anywhere, refused in the local registry's words; another
        # name is the server's to know (its zoo may know more families than this one).
        if not isinstance(family, str) or not family or "\x00" in family:
            get_family(family)
        check_lookup(name)  # "" is sent: the server says no learngene has it
        path = f"/api/defaults/{quote(family, safe='')}"
        body = self._call("PUT", path, json={"learngene": name})
        return artifact_from_json(body["learngene"])

    def lineage(
        self, name: str, *, up: bool = True, down: bool = True, depth=None, include_deleted=False
    ):
        _flags(up=up, down=down, include_deleted=include_deleted)
        from zoo.api.lineage import check_depth

        check_depth(depth)  # sent as text, "2" or 2.0 would be read as 2
        params = {"up": str(up).lower(), "down": str(down).lower(), "format": "json"}
        if include_deleted:
            params["all"] = "true"
        if depth is not None:
            params["depth"] = depth
        return lineage_from_json(
            self._call("GET", f"/api/artifacts/{_q(name)}/lineage", params=params)
        )

    def link(self, child: str, parent: str, *, relation: str = "finetune", note=None):
        from zoo.api.lineage import check_link
        from zoo.db.entities import EdgeInfo

        check_link(child, parent, relation=relation, note=note)
        body = self._call(
            "POST",
            f"/api/artifacts/{_q(child)}/links",
            json={"parent": parent, "relation": relation, "note": note},
        )
        return _edge(body, EdgeInfo)

    def audit(self, path, *, verify: bool = False, convert_bin: bool = False):
        """Identify ``path`` as the server's registry does: the checkpoint is read and
        hashed here, as a local audit reads it, and only its tensors' hashes, config.json
        and metadata are sent (the weights never travel, as from the web page)."""
        _flags(verify=verify, convert_bin=convert_bin)
        from zoo.api.audit import check_audit_path, identify_with_casts
        from zoo.checkpoint import open_checkpoint
        from zoo.checkpoint.casts import narrowed

        found = check_audit_path(path)  # "" would audit the current folder

        def identify(manifest, verify: bool = False):
            tensors = [
                {
                    "name": t.name,
                    "dtype": t.dtype,
                    "shape": list(t.shape),
                    "nbytes": t.nbytes,
                    "digest": t.digest,
                }
                for t in manifest
            ]
            body = self._call(
                "POST",
                "/api/audit/hashes",
                params={"verify": str(verify).lower()},
                json={
                    "label": str(path),
                    "tensors": tensors,
                    "config": config,
                    "metadata": metadata,
                },
            )
            return audit_from_json(body)

        with open_checkpoint(found, allow_bin=convert_bin) as ckpt:
            config, metadata = ckpt.config, dict(ckpt.metadata)
            report, manifest = identify_with_casts(
                identify, list(ckpt.tensors), lambda: narrowed(ckpt), self._recorded
            )
        if verify and report.artifact is not None and report.artifact.kind == "derived":
            cast_from = report.cast_from
            report = identify(manifest, verify=True)
            report.cast_from = cast_from
        return report

    def _recorded(self, artifact) -> tuple:
        """An audit report's artifact's tensor records (a report carries none); none when
        the server no longer shows it (removed meanwhile)."""
        if artifact.tensors:
            return artifact.tensors
        try:
            return self.show(artifact.name).tensors
        except errors.ZooError:
            return ()

    def gc(self, *, grace="24h", dry_run: bool = False):
        _flags(dry_run=dry_run)
        from zoo.api.arguments import parse_duration
        from zoo.api.reports import GcReport, StoreItem

        parse_duration(grace)  # in the local registry's words; sent as given
        body = self._call("POST", "/api/gc", json={"grace": grace, "dry_run": dry_run})
        return GcReport(
            dry_run=body["dry_run"],
            grace_s=body["grace_s"],
            marked=body["marked"],
            swept=tuple(StoreItem(**s) for s in body["swept"]),
            too_young=body["too_young"],
            hard_deleted=tuple(body["hard_deleted"]),
            kept_deleted=tuple(body["kept_deleted"]),
            unused_placeholders=tuple(body.get("unused_placeholders", ())),
            quarantined=tuple(StoreItem(**s) for s in body.get("quarantined", ())),
            quarantine=body.get("quarantine", ""),
        )

    def fsck(self, *, repair: bool = False, grace="24h"):
        _flags(repair=repair)
        from zoo.api.arguments import parse_duration
        from zoo.api.reports import FsckReport, StoreItem

        parse_duration(grace)  # in the local registry's words; sent as given
        body = self._call("POST", "/api/fsck", json={"repair": repair, "grace": grace})
        return FsckReport(
            store_url=body["store_url"],
            checked_rows=body["checked_rows"],
            stored_blobs=body["stored_blobs"],
            problems=_problems(body["problems"]),
            temp_files=tuple(StoreItem(**s) for s in body["temp_files"]),
            orphans=tuple(StoreItem(**s) for s in body["orphans"]),
            output_leftovers=tuple(body["output_leftovers"]),
            removed=tuple(body["removed"]),
            grace_s=body["grace_s"],
            repair=body["repair"],
            shared_with=body.get("shared_with", 0),
            dangling=tuple(body.get("dangling", ())),
            restored=tuple(body.get("restored", ())),
            quarantined=tuple(body.get("quarantined", ())),
            quarantine=body.get("quarantine", ""),
        )

    def verify(self, name: str | None = None, *, repair: bool = False):
        _flags(repair=repair)
        from zoo.api.reports import VerifyReport

        params = {} if name is None else {"name": name}
        if name is not None:
            _q(name)  # "" or 0 is no artifact, not "the whole store"
        if repair:
            params["repair"] = "true"
        body = self._call("POST", "/api/verify", params=params or None)
        return VerifyReport(
            checked=body["checked"],
            checked_bytes=body["checked_bytes"],
            problems=_problems(body["problems"]),
            repaired=tuple(body["repaired"]),
            repair=body["repair"],
            quarantined=tuple(body.get("quarantined", ())),
            quarantine=body.get("quarantine", ""),
        )

    def create_token(self, name: str, *, role: str = "read", expires=None):
        from datetime import datetime, timedelta

        from zoo.api.tokens import check_role, clock, parse_expiry
        from zoo.checkpoint.names import validate_name

        validate_name(name, "token name")  # in the local registry's words
        check_role(role)
        parse_expiry(expires, at=clock())  # refused here as the server would refuse it
        # A duration runs from the server's clock, which makes the token.
        if isinstance(expires, timedelta):
            expires = f"{expires.total_seconds()}s"
        elif isinstance(expires, datetime):
            expires = expires.isoformat()
        request = {"name": name, "role": role, "expires": expires}
        body = self._call("POST", "/api/tokens", json=request)
        return token_from_json(body), body["secret"]

    def revoke_token(self, name: str):
        missing = "No active token is named ''; see `zoo token list`."
        path = f"/api/tokens/{_q(name, missing, 'token name')}"
        return [token_from_json(t) for t in self._call("DELETE", path)]

    def list_tokens(self, *, include_revoked: bool = False):
        _flags(include_revoked=include_revoked)
        body = self._call("GET", "/api/tokens", params={"all": str(include_revoked).lower()})
        return [token_from_json(t) for t in body]

    def _local_only(self, *args, **kwargs):
        raise InvalidInputError(
            "Schema migrations run where the database is: on the server's machine, without "
            "ZOO_ENDPOINT."
        )

    db_upgrade = db_downgrade = db_current = _local_only

    def release_claim(self, registry_id: str, *, retired: bool = False):
        raise InvalidInputError(
            "A store's claims are released where the database is: on the server's "
            "machine, without ZOO_ENDPOINT."
        )


class RemoteMaterialized:
    """What ``materialize`` returns in client mode; ``state_dict`` is downloaded (and
    loaded on the CPU) only when it is read, and is None when not asked for."""

    def __init__(
        self, reg: RemoteRegistry, config, artifact, out: Path | None, weights: bool = True
    ) -> None:
        self._reg, self.config, self.artifact, self.out = reg, config, artifact, out
        self._weights = weights
        self.warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        from zoo.api.materialize import _summary

        loaded = self.__dict__.get("state_dict", "<read when first used>")
        return _summary(self, loaded if self._weights else None)

    @cached_property
    def state_dict(self):
        if not self._weights:
            return None
        if self.out is not None:
            return _load_weights(self.out)
        with tempfile.TemporaryDirectory() as tmp:
            folder = self._reg._download(self.artifact, Path(tmp) / "m", force=False)
            return _load_weights(folder)


def _load_weights(folder: Path) -> dict:
    """Every tensor of an HF folder's weights, one file or several shards."""
    from safetensors.torch import load_file

    state: dict = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(path)))
    return state


# --- records back from JSON -------------------------------------------------------------------


def _parts(stack: contextlib.ExitStack, folder: Path, names: list[str]) -> list:
    """Multipart file parts, each read from disk as it is sent."""
    return [
        ("files", (n, stack.enter_context(open(folder / n, "rb")), "application/octet-stream"))
        for n in names
    ]


def _flags(**flags) -> None:
    """Yes-or-no options refused as the local registry refuses them (a query string or a
    body would carry "no" or None as something else)."""
    from zoo.api.arguments import check_flags

    check_flags(**flags)


def _q(
    name,
    missing: str = "No artifact named ''. Run `reg.list()` to see what is registered.",
    what: str = "name",
) -> str:
    """A name in a URL path, refused here as the local registry refuses it, in its words
    (:func:`zoo.db.entities.check_lookup`), and not empty (an empty segment would reach
    another route; ``missing`` says so)."""
    from zoo.db.entities import check_lookup

    check_lookup(name, what)
    if not name:
        raise errors.NotFoundError(missing)
    return quote(name, safe="")


@contextlib.contextmanager
def _upload_folder(path: Path, *, convert_bin: bool):
    """The files of the folder ``path`` an upload sends, as (name in the folder, path),
    as a local import reads them: config.json, the safetensors weights and their index,
    and the side files at its top
    (tokenizer, generation and processor configs, chat template, model card, license
    files, the code an auto_map names, sentence-transformers settings). A folder without
    safetensors weights is read here as a local import reads it, with its errors (pickle
    weights only with ``convert_bin``, by ``torch.load(weights_only=True)``), and its
    tensors are sent as one safetensors file, since the server takes no pickle."""
    from zoo.checkpoint.files import is_regular, not_a_file
    from zoo.checkpoint.hf import SAFE_WEIGHTS_NAME, check_folder, read_config, weight_files_read
    from zoo.checkpoint.side_files import scan

    # What the import would refuse before reading a weight (its config, its index, a
    # truncated shard's header) is refused here, first, as a local import does: sent, it
    # would be refused only once every byte of the weights had travelled.
    read_config(path)
    # A shard that is not a file (a FIFO), refused in a local import's words: left out,
    # the server would call it missing.
    read = {*_UPLOADED, SAFE_WEIGHTS_NAME, *weight_files_read(path, strict=True)}
    weights = []
    for f in sorted(path.iterdir()):
        if f.name in _UPLOADED or f.name.endswith(".safetensors"):
            if is_regular(f):
                weights.append((f.name, f))
            elif f.name in read:
                raise not_a_file(f)
    # Named by their path in the folder: a module folder's files (1_Pooling/config.json).
    side = sorted((f.name, path / f.name) for f in scan(path).found)
    if any(name.endswith(".safetensors") for name, _ in weights):
        check_folder(path)
        yield sorted(weights + side)
        return
    from safetensors.torch import save_file

    from zoo.checkpoint import open_checkpoint

    with open_checkpoint(path, allow_bin=convert_bin) as checkpoint:
        state = checkpoint.state_dict()
    storages: set[int] = set()
    for name, t in state.items():  # safetensors writes no tensor twice: tied ones copied
        shared = t.untyped_storage().data_ptr() in storages
        storages.add(t.untyped_storage().data_ptr())
        state[name] = t.clone() if shared else t.contiguous()
    with tempfile.TemporaryDirectory(prefix="zoo-upload-") as tmp:
        converted = Path(tmp) / "model.safetensors"
        save_file(state, converted, metadata={"format": "pt"})
        del state
        config = [(name, f) for name, f in weights if name == "config.json"]
        yield [*sorted(config + side), ("model.safetensors", converted)]


def _folder_name(path: Path) -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.resolve().name).strip(".-")
    return name[:100] or "upload"


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def summary_from_json(d: dict[str, Any]):
    from zoo.db.entities import ArtifactSummary

    return ArtifactSummary(
        id=d["id"],
        kind=d["kind"],
        name=d["name"],
        family=d["family"],
        content_hash=d["content_hash"],
        virtual=d["virtual"],
        created_at=_time(d["created_at"]),
        created_by=d["created_by"],
        deleted=d["deleted"],
        tensor_count=d["tensor_count"],
        nbytes=d["nbytes"],
        layers=d["layers"],
        hidden=d["hidden"],
        aliases=tuple(d.get("aliases", ())),
    )


def artifact_from_json(d: dict[str, Any]):
    from zoo.db.entities import ArtifactInfo, FileRecord, ImportInfo, TensorRecord

    return ArtifactInfo(
        id=d["id"],
        kind=d["kind"],
        name=d["name"],
        family=d["family"],
        content_hash=d["content_hash"],
        config=d["config"],
        info=d["info"],
        virtual=d["virtual"],
        created_at=_time(d["created_at"]),
        created_by=d["created_by"],
        deleted=d.get("deleted", False),
        aliases=tuple(d.get("aliases", ())),
        imports=tuple(
            ImportInfo(
                i["origin"], i["revision"], i["files"], _time(i["imported_at"]), i["imported_by"]
            )
            for i in d.get("imports", ())
        ),
        tensors=tuple(
            TensorRecord(t["name"], t["dtype"], tuple(t["shape"]), t["nbytes"], t["digest"])
            for t in d.get("tensors", ())
        ),
        files=tuple(FileRecord(**f) for f in d.get("files", ())),
        replaced_files=tuple(FileRecord(**f) for f in d.get("replaced_files", ())),
        same_content=tuple((c["kind"], c["name"]) for c in d.get("same_content", ())),
        tensor_count=d.get("tensor_count", 0),
        nbytes=d.get("nbytes", 0),
        layers=d.get("layers"),
        hidden=d.get("hidden"),
    )


def _edge(e: dict[str, Any], cls):
    return cls(
        id=e["id"],
        parent_id=e["parent_id"],
        child_id=e["child_id"],
        relation=e["relation"],
        recipe=e["recipe"],
        zoo_version=e["zoo_version"],
        created_at=_time(e["created_at"]),
        created_by=e["created_by"],
        parent_name=e.get("parent_name"),
        child_name=e.get("child_name"),
    )


def lineage_from_json(d: dict[str, Any]):
    from zoo.api.lineage import Lineage, Node
    from zoo.db.entities import EdgeInfo, ImportInfo

    nodes = {n["id"]: Node(**n) for n in d["nodes"]}
    ids = {n.name: i for i, n in nodes.items()}
    graph = Lineage(root=ids[d["root"]], nodes=nodes, depth=d.get("depth"))
    graph.edges = [_edge(e, EdgeInfo) for e in d["edges"]]
    graph.imports = {
        ids[name]: [
            ImportInfo(
                i["origin"], i["revision"], i["files"], _time(i["imported_at"]), i["imported_by"]
            )
            for i in imps
        ]
        for name, imps in d["imports"].items()
    }
    return graph


def audit_from_json(d: dict[str, Any]):
    from zoo.api.audit import AuditReport

    return AuditReport(
        path=d["path"],
        status=d["status"],
        artifact=artifact_from_json(d["artifact"]) if d["artifact"] else None,
        differing=d["differing"],
        missing=d["missing"],
        extra=d["extra"],
        config_differs=d["config_differs"],
        not_compared=d["not_compared"],
        named_by_file=d["named_by_file"],
        lineage=lineage_from_json(d["lineage"]) if d["lineage"] else None,
        verified=d["verified"],
        verify_error=d["verify_error"],
        cast_from=d.get("cast_from", []),
        rounded_to=d.get("rounded_to", []),
        prefix_dropped=d.get("prefix_dropped"),
        prefix_added=d.get("prefix_added"),
        head_dropped=d.get("head_dropped", False),
        norm_names_differ=d.get("norm_names_differ", False),
        wrapper_prefix=d.get("wrapper_prefix"),
    )


def token_from_json(d: dict[str, Any]):
    from zoo.api.tokens import TokenInfo

    return TokenInfo(
        d["id"],
        d["name"],
        d["role"],
        _time(d["created_at"]),
        d["created_by"],
        _time(d["revoked_at"]),
        _time(d.get("expires_at")),  # none from a server older than token expiry
        d.get("expired", False),
    )


def _problems(items) -> tuple:
    from zoo.api.reports import BlobProblem

    return tuple(
        BlobProblem(p["digest"], p["problem"], tuple(p["artifacts"]), p["detail"], p["fix"])
        for p in items
    )


def _origin(path: Path) -> str:
    """``HOST:PATH`` of a folder uploaded for import: the provenance its record keeps, as
    the server takes it: one line of printable text (a tab or newline in the path
    escaped), at most 1024 characters (a longer one keeps the path's end, the folder's
    name, after "...")."""
    import socket

    from zoo.text import printable

    host = printable(socket.gethostname())
    text = f"{host}:{printable(str(path.resolve()))}"
    if len(text) <= _MAX_ORIGIN:
        return text
    head = f"{host}:..."
    return head + text[len(text) - (_MAX_ORIGIN - len(head)) :]


_MAX_ORIGIN = 1024  # the server's bound on an upload's origin (zoo.server.app)


__all__ = ["RemoteRegistry", "artifact_from_json", "endpoint_from_env"]


def _check_out(out, force: bool, max_shard_size=None) -> Path | None:
    """``out`` as the folder it names, refused, before asking the server for any work,
    when zoo would not write it."""
    from zoo.api.export import check_out_dir, out_path, parse_size
    from zoo.errors import InvalidInputError

    if out is None:
        if force:
            raise InvalidInputError(
                "force=True replaces a previous out= folder; give out=.", params=["force", "out"]
            )
        if max_shard_size is not None:
            raise InvalidInputError(
                "max_shard_size= applies to out=; give out=.", params=["max_shard_size", "out"]
            )
        return None
    if max_shard_size is not None:
        parse_size(max_shard_size)
    folder = out_path(out)
    check_out_dir(folder, force=force)
    return folder
