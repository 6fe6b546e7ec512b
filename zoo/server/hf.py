"""Hugging Face-compatible reads: ``huggingface_hub`` and ``from_pretrained`` pointed at a
zoo server (``HF_ENDPOINT`` or ``endpoint=``) download its checkpoints.

The repository id is a zoo name or alias, a family name with a default learngene, or a
Hub repository id ``ORG/NAME`` (the artifact imported last from its default branch). The
revision is ``main`` (the artifact itself), a commit (what ``X-Repo-Commit`` answers: the
first 40 hex digits of a content hash, or with side files its first 28 and 12 of theirs,
:func:`zoo.server.work.commit_of`), or a size ``LAYERSxHIDDEN`` such as
``6x384``: that size is materialized on demand, recorded, and served. What
``huggingface_hub`` reads (its ``file_download.py`` and ``hf_api.py``): ``HEAD`` then
``GET /{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit``, ``ETag`` (here the
file's sha256) and ``Content-Length``; ``/api/models/{repo}/revision/{revision}`` for the
commit and file list; ``/api/models/{repo}/tree/{commit}[/{folder}]``; and ``X-Error-Code``
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) on a 404. Beside them what
``HfApi`` reads of a repository: ``paths-info``, ``commits``, ``refs``, ``auth-check`` and
``/api/whoami-v2``; its writes are refused (405, :func:`is_hub_write`).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from fastapi import Request

from zoo.errors import InvalidInputError, NotFoundError, StorageError, ZooError
from zoo.server.work import commit_of

# The OpenAPI tag of the routes a Hugging Face client calls (their query strings are its own).
HUB_TAG = "hugging face"

_SPEC = re.compile(r"(\d{1,5})x(\d{1,7})")

# The organizations sentence-transformers puts before a name that has none: it asks for
# SentenceTransformer("all-MiniLM-L6-v2") as sentence-transformers/all-MiniLM-L6-v2 (and
# CrossEncoder, SparseEncoder under theirs), so a zoo name loaded that way arrives with one.
ENCODER_ORGS = ("sentence-transformers", "cross-encoder", "sparse-encoder")
_COMMIT = re.compile(r"[0-9a-f]{8,64}")

# The Hub's API for writing: create_repo, delete_repo, move_repo (/api/repos/...), and a
# repository's preupload, commit, branch, tag and settings (/api/models/NAME/...).
_HUB_WRITE = re.compile(r"/api/(?:models|datasets|spaces|repos)(?:/|$)")
HUB_WRITES_REFUSED = (
    "zoo serve takes no writes through the Hub's API (create_repo, upload_file, "
    "branches, tags): add a checkpoint with `zoo import`, or POST /api/import/upload "
    "with a write token."
)


def is_hub_write(method: str, path: str) -> bool:
    """Whether a request no route took is a huggingface_hub write (any method but a read
    under the Hub's repository paths), refused as such rather than as a path unknown."""
    return method not in ("GET", "HEAD", "OPTIONS") and bool(_HUB_WRITE.match(path))


# transformers' own table of the pipeline tag each architecture (a model class) has on the
# Hub: utils/update_metadata.py's PIPELINE_TAGS_AND_AUTO_MODELS, which writes the Hub's
# huggingface/transformers-metadata pipeline_tags.json from the auto classes' mappings. It
# is not installed with transformers; the mappings are, and the table is built from them
# as there: a later tag wins (GPT2LMHeadModel is pretraining, then text-generation), a
# mapping this transformers lacks is passed over.
_PIPELINE_TAGS_AND_AUTO_MODELS = (
    ("pretraining", "MODEL_FOR_PRETRAINING_MAPPING_NAMES", "AutoModelForPreTraining"),
    ("feature-extraction", "MODEL_MAPPING_NAMES", "AutoModel"),
    ("image-feature-extraction", "MODEL_FOR_IMAGE_MAPPING_NAMES", "AutoModel"),
    (
        "audio-classification",
        "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
        "AutoModelForAudioClassification",
    ),
    ("text-generation", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "AutoModelForCausalLM"),
    ("automatic-speech-recognition", "MODEL_FOR_CTC_MAPPING_NAMES", "AutoModelForCTC"),
    (
        "image-classification",
        "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
        "AutoModelForImageClassification",
    ),
    (
        "image-segmentation",
        "MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES",
        "AutoModelForImageSegmentation",
    ),
    ("image-to-image", "MODEL_FOR_IMAGE_TO_IMAGE_MAPPING_NAMES", "AutoModelForImageToImage"),
    ("fill-mask", "MODEL_FOR_MASKED_LM_MAPPING_NAMES", "AutoModelForMaskedLM"),
    ("object-detection", "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES", "AutoModelForObjectDetection"),
    (
        "zero-shot-object-detection",
        "MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES",
        "AutoModelForZeroShotObjectDetection",
    ),
    (
        "question-answering",
        "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
        "AutoModelForQuestionAnswering",
    ),
    (
        "text2text-generation",
        "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
        "AutoModelForSeq2SeqLM",
    ),
    (
        "text-classification",
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
        "AutoModelForSequenceClassification",
    ),
    (
        "automatic-speech-recognition",
        "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
        "AutoModelForSpeechSeq2Seq",
    ),
    (
        "table-question-answering",
        "MODEL_FOR_TABLE_QUESTION_ANSWERING_MAPPING_NAMES",
        "AutoModelForTableQuestionAnswering",
    ),
    (
        "token-classification",
        "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
        "AutoModelForTokenClassification",
    ),
    ("multiple-choice", "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES", "AutoModelForMultipleChoice"),
    (
        "next-sentence-prediction",
        "MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING_NAMES",
        "AutoModelForNextSentencePrediction",
    ),
    (
        "audio-frame-classification",
        "MODEL_FOR_AUDIO_FRAME_CLASSIFICATION_MAPPING_NAMES",
        "AutoModelForAudioFrameClassification",
    ),
    ("audio-xvector", "MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES", "AutoModelForAudioXVector"),
    (
        "document-question-answering",
        "MODEL_FOR_DOCUMENT_QUESTION_ANSWERING_MAPPING_NAMES",
        "AutoModelForDocumentQuestionAnswering",
    ),
    (
        "visual-question-answering",
        "MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES",
        "AutoModelForVisualQuestionAnswering",
    ),
    ("image-to-text", "MODEL_FOR_FOR_VISION_2_SEQ_MAPPING_NAMES", "AutoModelForVision2Seq"),
    (
        "zero-shot-image-classification",
        "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
        "AutoModelForZeroShotImageClassification",
    ),
    ("depth-estimation", "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES", "AutoModelForDepthEstimation"),
    (
        "video-classification",
        "MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES",
        "AutoModelForVideoClassification",
    ),
    ("mask-generation", "MODEL_FOR_MASK_GENERATION_MAPPING_NAMES", "AutoModelForMaskGeneration"),
    (
        "text-to-audio",
        "MODEL_FOR_TEXT_TO_SPECTROGRAM_MAPPING_NAMES",
        "AutoModelForTextToSpectrogram",
    ),
    ("text-to-audio", "MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES", "AutoModelForTextToWaveform"),
)


@functools.cache
def architecture_tasks() -> dict[str, tuple[str, str]]:
    """Model class name -> (the Hub's pipeline tag, the auto class), by transformers'
    table (:data:`_PIPELINE_TAGS_AND_AUTO_MODELS`); empty without transformers."""
    try:
        from transformers.models.auto import modeling_auto
    except ImportError:
        return {}
    table: dict[str, tuple[str, str]] = {}
    for tag, mapping, auto_class in _PIPELINE_TAGS_AND_AUTO_MODELS:
        for names in getattr(modeling_auto, mapping, {}).values():
            for name in [names] if isinstance(names, str) else names:
                table[name] = (tag, auto_class)
    return table


def hub_metadata(folder: Path) -> dict:
    """What the Hub tells of a repository beyond its files, from the files: its card's
    front matter (``cardData``), the config's architectures and model type (``config``),
    ``library_name`` (the card's, else transformers), ``transformersInfo`` and
    ``pipeline_tag``: the card's when it states one, else what its architecture is for
    (:func:`architecture_tasks`), else none, as the Hub infers it. transformers'
    ``pipeline(model=NAME)`` takes its task from this tag."""
    from zoo.checkpoint.side_files import card_metadata

    card = folder / "README.md"
    meta = card_metadata(card.read_text(errors="replace")) if card.is_file() else {}
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    library = meta.get("library_name")
    library = library if isinstance(library, str) and library else "transformers"
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    task = architecture_tasks().get(arch) if arch and library == "transformers" else None
    tag = meta.get("pipeline_tag")
    out: dict = {
        "library_name": library,
        "pipeline_tag": tag if isinstance(tag, str) and tag else (task[0] if task else None),
        "config": {k: config[k] for k in ("architectures", "model_type") if k in config},
    }
    if meta:
        out["cardData"] = meta
    if task:
        out["transformersInfo"] = {"auto_model": task[1], "pipeline_tag": task[0]}
    return out


def _of_repo(reg, repo: str, info, found) -> bool:
    """Whether ``found`` is a commit of repository ``repo`` (``info``: its artifact, None
    for a family name): that artifact's content, or made from it by zoo or declared so
    (a size served from it, a fine-tune linked to it); for a family, one of its models.
    Another model's commit under this name would load the wrong weights silently."""
    from zoo.api.lineage import is_ancestor
    from zoo.api.plan import resolve_parent
    from zoo.families import FAMILY_NAMES

    if info is None:
        return found.family == repo
    if found.content_hash == info.content_hash:
        return True
    with reg.session() as session:
        if is_ancestor(session, info.id, found.id):
            return True
        if repo not in FAMILY_NAMES:
            return False
        # A family name a `zoo default` set means that learngene, also where an artifact
        # has the name: its sizes (the revisions this server answered) are made from it.
        made_from = resolve_parent(session, repo)
        return made_from.id != info.id and (
            made_from.content_hash == found.content_hash
            or is_ancestor(session, made_from.id, found.id)
        )


def _hub_time(when) -> str:
    """The Hub's timestamp format (UTC, milliseconds, 'Z'), which huggingface_hub parses."""
    from datetime import timezone

    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _hf(exc: ZooError, code: str) -> ZooError:
    exc.hf_error_code = code
    return exc


def tree_entries(files: dict[str, dict], folder: str = "", *, recursive: bool = False):
    """The Hub's tree listing of ``files`` (name -> sha256 and size) under ``folder`` ("":
    the top): its files, and its folders as ``directory`` entries, either directly in
    it or (``recursive``) anywhere below. A folder no file lies in is EntryNotFound, as
    on the Hub."""
    folder = folder.strip("/")
    prefix = f"{folder}/" if folder else ""
    entries: dict[str, dict] = {}
    for name, meta in sorted(files.items()):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        # The folders between ``folder`` and the file, as far as the listing goes.
        for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
            path = prefix + "/".join(parts[:depth])
            entries.setdefault(
                path, {"type": "directory", "oid": "0" * 40, "size": 0, "path": path}
            )
        if recursive or len(parts) == 1:
            sha = meta["sha256"]
            lfs = {"oid": sha, "size": meta["size"], "pointerSize": 134}
            entries[name] = {
                "type": "file",
                "oid": sha[:40],
                "size": meta["size"],
                "path": name,
                "lfs": lfs,
            }
    if folder and not entries:
        raise _hf(NotFoundError(f"No folder {folder[:80]!r} at this revision."), "EntryNotFound")
    return [entries[k] for k in sorted(entries)]


def add_hf_routes(app, server, read) -> None:
    from zoo.server.checks import check_query

    async def named(repo: str) -> str:
        """The name ``repo`` means here: itself, or for ``ORG/NAME`` under an organization
        sentence-transformers adds (:data:`ENCODER_ORGS`) that names nothing here while
        ``NAME`` does (an artifact or a family), ``NAME``."""
        from zoo.families import FAMILY_NAMES

        org, slash, name = repo.partition("/")
        if not slash or org not in ENCODER_ORGS or "/" in name:
            return repo
        try:
            await server.db(server.reg.show, check_query(repo, "repository id"))
            return repo
        except NotFoundError:
            pass
        if name in FAMILY_NAMES:
            return name
        try:
            await server.db(server.reg.show, check_query(name, "repository id"))
        except NotFoundError:
            return repo  # the refusal names what was asked for
        return name

    async def artifact(repo: str):
        repo = await named(repo)
        try:
            info = await server.db(server.reg.show, check_query(repo, "repository id"))
        except NotFoundError as exc:
            from zoo.families import FAMILY_NAMES

            if repo in FAMILY_NAMES:
                return None  # a family: sizes come from its default learngene
            raise _hf(exc, "RepoNotFound") from None
        if info.kind == "placeholder":
            source = info.info.get("repo_id", info.name)
            raise _hf(
                NotFoundError(
                    f"{repo} is only named as a base_model by a model card here and holds no "
                    f"weights: import it first (zoo import {source})."
                ),
                "RepoNotFound",
            )
        return info

    async def resolve(repo: str, revision: str, caller: Request | None = None) -> str:
        """The cache folder (:func:`zoo.server.work.folder_key`, which starts with the
        content hash) of the files the revision names; builds them if needed."""
        return (await resolve_served(repo, revision, caller))[0]

    async def resolve_served(repo: str, revision: str, caller: Request | None = None):
        """The cache folder of the files the revision names and the artifact they are
        (the commit's author and date). A size made for ``caller``, a request, is not
        recorded if every request waiting for it leaves first."""
        repo = await named(repo)
        info = await artifact(repo)
        if revision == "main":
            if info is None or info.kind == "learngene":
                what = "a family" if info is None else "a learngene"
                raise _hf(
                    NotFoundError(
                        f"{repo} is {what}, not a checkpoint: ask for a size as the revision, "
                        'e.g. revision="6x384" (layers x hidden).'
                    ),
                    "RevisionNotFound",
                )
            return await server.export(info), info
        spec = _SPEC.fullmatch(revision)
        if spec:
            params = {"layers": int(spec.group(1)), "hidden": int(spec.group(2))}
            try:
                made, _config, folder, _ = await server.materialize(repo, params, caller=caller)
            except (InvalidInputError, NotFoundError, StorageError) as exc:
                # A size this model cannot take, a family with nothing to make it from, a
                # size the disk cannot hold: without the code huggingface_hub takes any
                # 4xx/5xx for a network failure ("check your connection").
                raise _hf(exc, "RevisionNotFound") from None
            if info is not None and made.content_hash == info.content_hash:
                # Its own size is the artifact itself: one commit, one set of files (the
                # derived record's card and metadata would differ under the same commit).
                return await server.export(info), info
            return folder, made
        if _COMMIT.fullmatch(revision):
            try:
                found = await server.db(server.reg.show, revision)
                files_commit = False
            except NotFoundError as exc:
                if len(revision) != 40:
                    raise _hf(exc, "RevisionNotFound") from None
                try:  # a commit of a folder with side files: 28 digits of its content
                    found = await server.db(server.reg.show, revision[:28])
                except NotFoundError:
                    raise _hf(exc, "RevisionNotFound") from None
                files_commit = True
            if found.kind == "learngene":
                raise _hf(NotFoundError(f"{revision} is a learngene."), "RevisionNotFound")
            if not await server.db(_of_repo, server.reg, repo, info, found):
                raise _hf(
                    NotFoundError(
                        f"Commit {revision[:12]} is {found.kind} {found.name}, neither {repo} "
                        "nor made from it."
                    ),
                    "RevisionNotFound",
                )
            key = await server.export(found)
            if files_commit and commit_of(key) != revision:
                raise _hf(
                    NotFoundError(
                        f"Commit {revision[:12]}'s files (a tokenizer, config or card) were "
                        f"replaced by a later import of {found.name}; it is at commit "
                        f"{commit_of(key)} now."
                    ),
                    "RevisionNotFound",
                )
            return key, found
        raise _hf(
            NotFoundError(
                f"Revision {revision[:40]!r} is not main, a commit, or a size LAYERSxHIDDEN "
                "(e.g. 6x384)."
            ),
            "RevisionNotFound",
        )

    def repo_info(repo: str, key: str, info, expand: list[str]) -> dict:
        files = server.cache.files(key)
        answer = {
            "_id": key[:24],
            "id": repo,
            "modelId": repo,
            "sha": commit_of(key),
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": ["zoo", *([info.kind, info.family] if info else [])],
            "createdAt": _hub_time(info.created_at) if info else None,
            "lastModified": _hub_time(info.created_at) if info else None,
            **hub_metadata(server.cache.root / key),
            "siblings": [
                {
                    "rfilename": name,
                    "size": meta["size"],
                    "lfs": {"sha256": meta["sha256"], "size": meta["size"], "pointerSize": 134},
                }
                for name, meta in sorted(files.items())
            ],
        }
        if expand:  # the properties asked for alone, as the Hub answers expand=...
            answer = {k: v for k, v in answer.items() if k in ("_id", "id", *expand)}
        return answer

    async def model_info_at(request: Request, repo: str, revision: str) -> dict:
        key = await resolve(repo, revision, request)
        info = await artifact(repo)
        expand = request.query_params.getlist("expand")
        return await server.db(repo_info, repo, key, info, expand)

    def commit_entry(key: str, served) -> dict:
        """The one commit of a revision: zoo's commits are its contents
        (:func:`zoo.server.work.commit_of`), with no parent and no history."""
        title = f"{served.name} ({served.kind})"
        return {
            "id": commit_of(key),
            "title": title,
            "message": "",
            "authors": [{"user": served.created_by}],
            "date": _hub_time(served.created_at),
        }

    async def commits(repo: str, revision: str) -> list[dict]:
        key, served = await resolve_served(repo, revision)
        return [commit_entry(key, served)]

    async def paths_info(request: Request, repo: str, revision: str) -> list[dict]:
        form = await request.form()
        paths = [p for p in form.getlist("paths") if isinstance(p, str)]
        expand = str(form.get("expand", "")).lower() in ("1", "true")
        key, served = await resolve_served(repo, revision, request)
        files = server.cache.files(key)
        entries = {e["path"]: e for e in tree_entries(files, recursive=True)}
        found = [entries[p.strip("/")] for p in dict.fromkeys(paths) if p.strip("/") in entries]
        if expand:  # the Hub's last commit of each path: here the revision's only one
            last = commit_entry(key, served)
            last = {k: last[k] for k in ("id", "title", "date")}
            found = [{**e, "lastCommit": last} for e in found]
        return found

    async def tree(repo: str, revision: str, folder: str, recursive: str) -> list[dict]:
        key = await resolve(repo, revision)
        files = server.cache.files(key)
        return tree_entries(files, folder, recursive=recursive.lower() in ("1", "true"))

    async def resolve_file(request: Request, repo: str, revision: str, filename: str):
        if "\x00" in filename or len(filename) > 256:
            raise InvalidInputError("A file name must be under 256 characters, without NUL.")
        key = await resolve(repo, revision, request)
        try:
            return server.file_response(request, key, filename)
        except NotFoundError as exc:
            exc.extra_headers = {"X-Repo-Commit": commit_of(key)}
            raise

    # Each route twice: a repository id is a zoo name (one path segment) or a Hub id
    # ``ORG/NAME`` (two), as huggingface_hub writes it into the path unquoted.
    hub = [HUB_TAG]

    async def refs(repo: str) -> dict:
        # One branch, main, at the commit its files are served under; sizes are
        # revisions, not branches.
        if await artifact(repo) is None:  # a family: only its sizes
            return {"branches": [], "converts": [], "tags": []}
        key = await resolve(repo, "main")
        branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": commit_of(key)}
        return {"branches": [branch], "converts": [], "tags": []}

    async def auth_check(repo: str) -> dict:
        await artifact(repo)  # the token was checked; a repository not here is a 404
        return {}

    @app.get("/api/whoami-v2", tags=hub, operation_id="hub_whoami")
    async def _whoami(token=read):
        """The token as huggingface_hub's whoami reads it: a user named as the token (the
        name zoo records its writes under) and its role, ``read`` or ``write`` (an admin
        token may write; the Hub knows no admin)."""
        from zoo.errors import AuthenticationError

        if token is None:  # --public-read, and no token: the Hub answers 401
            raise AuthenticationError("whoami names a token's user, and no token was sent.")
        role = "read" if token.role == "read" else "write"
        access = {
            "displayName": token.name,
            "role": role,
            "createdAt": _hub_time(token.created_at),
        }
        return {
            "type": "user",
            "id": str(token.id),
            "name": token.name,
            "fullname": token.name,
            "auth": {"type": "access_token", "accessToken": access},
        }

    # Before the ORG/NAME routes, which would take `tiny-bert/refs` for a Hub id.
    @app.get("/api/models/{repo}/refs", tags=hub, operation_id="refs")
    async def _refs(repo: str, _=read):
        """The repository's branches (main) and tags (none), as list_repo_refs reads them."""
        return await refs(repo)

    @app.get("/api/models/{org}/{repo}/refs", tags=hub, operation_id="hub_refs")
    async def _hub_refs(org: str, repo: str, _=read):
        """The branches of a Hub repository id."""
        return await refs(f"{org}/{repo}")

    @app.get("/api/models/{repo}/auth-check", tags=hub, operation_id="auth_check")
    async def _auth_check(repo: str, _=read):
        """200 when the token may read the repository (huggingface_hub's auth_check)."""
        return await auth_check(repo)

    @app.get("/api/models/{org}/{repo}/auth-check", tags=hub, operation_id="hub_auth_check")
    async def _hub_auth_check(org: str, repo: str, _=read):
        """200 when the token may read the Hub repository id."""
        return await auth_check(f"{org}/{repo}")

    @app.get("/api/models/{repo}", tags=hub, operation_id="model_info")
    async def _model_info(request: Request, repo: str, _=read):
        """Repository info at ``main`` (``expand``: only the properties named)."""
        return await model_info_at(request, repo, "main")

    @app.get("/api/models/{org}/{repo}", tags=hub, operation_id="hub_model_info")
    async def _hub_model_info(request: Request, org: str, repo: str, _=read):
        """Repository info at ``main`` of a Hub repository id, by its last import."""
        return await model_info_at(request, f"{org}/{repo}", "main")

    @app.get("/api/models/{repo}/revision/{revision}", tags=hub, operation_id="model_info_at")
    async def _model_info_at(request: Request, repo: str, revision: str, _=read):
        """Repository info at a revision: ``main``, a commit, or a size such as ``6x384``."""
        return await model_info_at(request, repo, revision)

    @app.get(
        "/api/models/{org}/{repo}/revision/{revision}", tags=hub, operation_id="hub_model_info_at"
    )
    async def _hub_model_info_at(request: Request, org: str, repo: str, revision: str, _=read):
        """Repository info of a Hub repository id at a revision."""
        return await model_info_at(request, f"{org}/{repo}", revision)

    @app.get("/api/models/{repo}/commits/{revision}", tags=hub, operation_id="commits")
    async def _commits(repo: str, revision: str, _=read):
        """The commits of a revision, as list_repo_commits reads them: its one commit."""
        return await commits(repo, revision)

    @app.get("/api/models/{org}/{repo}/commits/{revision}", tags=hub, operation_id="hub_commits")
    async def _hub_commits(org: str, repo: str, revision: str, _=read):
        """The commits of a Hub repository id's revision."""
        return await commits(f"{org}/{repo}", revision)

    @app.post("/api/models/{repo}/paths-info/{revision}", tags=hub, operation_id="paths_info")
    async def _paths_info(request: Request, repo: str, revision: str, _=read):
        """The files and folders among the form's ``paths`` at a revision (get_paths_info);
        a path not there is left out, as on the Hub."""
        return await paths_info(request, repo, revision)

    @app.post(
        "/api/models/{org}/{repo}/paths-info/{revision}",
        tags=hub,
        operation_id="hub_paths_info",
    )
    async def _hub_paths_info(request: Request, org: str, repo: str, revision: str, _=read):
        """The paths-info of a Hub repository id at a revision."""
        return await paths_info(request, f"{org}/{repo}", revision)

    @app.get("/api/models/{repo}/tree/{revision}", tags=hub, operation_id="tree")
    async def _tree(repo: str, revision: str, recursive: str = "", _=read):
        """The files and folders at a revision (with ``recursive=true``, every file)."""
        return await tree(repo, revision, "", recursive)

    @app.get("/api/models/{org}/{repo}/tree/{revision}", tags=hub, operation_id="hub_tree")
    async def _hub_tree(org: str, repo: str, revision: str, recursive: str = "", _=read):
        """The files and folders of a Hub repository id at a revision."""
        return await tree(f"{org}/{repo}", revision, "", recursive)

    # A folder's listing, as the Hub answers it: transformers lists additional_chat_templates/
    # to find a tokenizer's named chat templates.
    @app.get(
        "/api/models/{repo}/tree/{revision}/{folder:path}", tags=hub, operation_id="tree_folder"
    )
    async def _tree_folder(repo: str, revision: str, folder: str, recursive: str = "", _=read):
        """The files and folders in one folder at a revision (with ``recursive=true``, all
        below it)."""
        return await tree(repo, revision, folder, recursive)

    @app.get(
        "/api/models/{org}/{repo}/tree/{revision}/{folder:path}",
        tags=hub,
        operation_id="hub_tree_folder",
    )
    async def _hub_tree_folder(
        org: str, repo: str, revision: str, folder: str, recursive: str = "", _=read
    ):
        """One folder's files and folders of a Hub repository id at a revision."""
        return await tree(f"{org}/{repo}", revision, folder, recursive)

    @app.get("/{repo}/resolve/{revision}/{filename:path}", tags=hub, operation_id="resolve_file")
    @app.head(
        "/{repo}/resolve/{revision}/{filename:path}", tags=hub, operation_id="head_resolve_file"
    )
    async def _resolve_file(request: Request, repo: str, revision: str, filename: str, _=read):
        """One file; ``ETag`` is its sha256, ``X-Repo-Commit`` the commit of its folder
        (:func:`zoo.server.work.commit_of`)."""
        return await resolve_file(request, repo, revision, filename)

    @app.get(
        "/{org}/{repo}/resolve/{revision}/{filename:path}",
        tags=hub,
        operation_id="hub_resolve_file",
    )
    @app.head(
        "/{org}/{repo}/resolve/{revision}/{filename:path}",
        tags=hub,
        operation_id="head_hub_resolve_file",
    )
    async def _hub_resolve_file(
        request: Request, org: str, repo: str, revision: str, filename: str, _=read
    ):
        """One file of a Hub repository id, as above."""
        return await resolve_file(request, f"{org}/{repo}", revision, filename)
