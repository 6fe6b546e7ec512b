"""The ORM schema. Alembic owns the database: every change here needs a migration.

Nodes of the lineage graph are artifacts (source checkpoints, learngenes, derived
checkpoints), identified by content: ``(kind, content_hash)`` is unique, so registering
the same content twice finds the existing row. Edges carry the recipe of a derivation.
Tensor rows name blobs by sha256; a virtual derived checkpoint records its tensors'
hashes without storing their bytes, so ``digest`` is deliberately not a foreign key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

HASH = String(64)  # sha256 hex
NAME = String(128)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("kind", "content_hash"),
        # Counting the kept artifacts a filter matches reads this index, not the wide rows.
        Index("ix_artifacts_deleted_at_kind", "deleted_at", "kind"),
        # A page of every kept artifact, newest or oldest first, walks this index from one
        # end: the planner needs no statistics to choose it (SQLite never gathers them by
        # itself), where the index above would read every kept row and sort them.
        Index("ix_artifacts_deleted_at_id", "deleted_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # source | learngene | derived | placeholder (a Hub model named as a base_model in a
    # model card but not imported: it anchors lineage edges, and holds no content)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(NAME, unique=True)
    # None: zoo catalogues the checkpoint but knows no family that resizes it (a t5, a
    # mixture of experts), or the artifact is a placeholder with no content.
    family: Mapped[str | None] = mapped_column(String(32), index=True)
    content_hash: Mapped[str] = mapped_column(HASH)
    config_json: Mapped[str | None] = mapped_column(Text)
    # Kind-specific facts as canonical JSON: a learngene's method and settings, a derived
    # checkpoint's recipe and target size.
    info_json: Mapped[str] = mapped_column(Text, default="{}")
    virtual: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_by: Mapped[str] = mapped_column(String(128), index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What a listing prints and filters on, written with the row (the tensor rows of an
    # artifact never change after it), so a page never reads tensor rows.
    tensor_count: Mapped[int] = mapped_column(Integer, server_default="0")
    nbytes: Mapped[int] = mapped_column(BigInteger, server_default="0")
    layers: Mapped[int | None] = mapped_column(Integer)
    hidden: Mapped[int | None] = mapped_column(Integer)
    # A source's or derived checkpoint's weights, config aside
    # (:func:`zoo.checkpoint.manifest.weights_key`): an import finds the artifacts a copy
    # may be made of by it (migration 0011).
    weights_key: Mapped[str | None] = mapped_column(HASH, index=True)
    # Its weights key and its config less what every save writes
    # (:func:`zoo.checkpoint.manifest.copy_key`): a save_pretrained copy's, found by it.
    copy_key: Mapped[str | None] = mapped_column(HASH, index=True)


class ArtifactTotal(Base):
    """How many artifacts of a kind are kept and removed: the total a listing prints,
    read from one row instead of counted. Database triggers (migration 0007) keep it in
    the writer's own transaction, so no writer has to know it exists."""

    __tablename__ = "artifact_totals"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    kept: Mapped[int] = mapped_column(BigInteger)
    removed: Mapped[int] = mapped_column(BigInteger)


class ArtifactTensor(Base):
    __tablename__ = "artifact_tensors"
    __table_args__ = (Index("ix_artifact_tensors_digest", "digest"),)

    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    dtype: Mapped[str] = mapped_column(String(16))
    shape_json: Mapped[str] = mapped_column(String(256))
    nbytes: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(HASH)


class ArtifactFile(Base):
    """A file that came with a checkpoint besides its weights and config (tokenizer,
    generation and processor configs, chat template, model card), stored as a blob like a
    tensor: content-addressed by the sha256 of its bytes."""

    __tablename__ = "artifact_files"
    __table_args__ = (Index("ix_artifact_files_digest", "digest"),)

    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(256), primary_key=True)  # relative file name
    role: Mapped[str] = mapped_column(String(32))  # tokenizer | generation | processor | ...
    nbytes: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(HASH)


class Edge(Base):
    __tablename__ = "edges"
    __table_args__ = (UniqueConstraint("parent_id", "child_id", "relation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), index=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), index=True)
    relation: Mapped[str] = mapped_column(String(32))  # extract | materialize | finetune | ...
    recipe_json: Mapped[str] = mapped_column(Text, default="{}")
    zoo_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))


class ImportRecord(Base):
    """Provenance of a source: the import edge from outside the registry."""

    __tablename__ = "imports"
    __table_args__ = (
        UniqueConstraint("artifact_id", "origin", "revision"),
        # A Hub repository id (``ORG/NAME``) names the artifact imported from it last: found
        # by origin. A hash index on PostgreSQL: equality is all it answers, and a btree
        # entry could not hold every 1024-character origin.
        Index("ix_imports_origin", "origin", postgresql_using="hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), index=True
    )
    origin: Mapped[str] = mapped_column(String(1024))  # a local path or hf://ORG/NAME
    revision: Mapped[str] = mapped_column(String(64), default="")  # Hub commit, "" for paths
    files_json: Mapped[str] = mapped_column(Text)  # {file name: sha256}
    # Imported as the repository's default branch (no --revision, or main), not a pinned
    # revision: a Hub repository id names these first. A folder's import counts as one.
    from_main: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # The last import of this revision from this origin (a re-import moves it).
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    imported_by: Mapped[str] = mapped_column(String(128))


class Alias(Base):
    __tablename__ = "aliases"

    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AliasHistory(Base):
    """Where an alias pointed, and since when: one row each time it is set or moved, and
    one without an artifact when it goes with the artifact it named (``zoo gc``).

    The artifact is copied by name, kind and content hash rather than referenced, so the
    record outlives the artifact (``zoo gc`` forgets removed rows, not this history)."""

    __tablename__ = "alias_history"
    __table_args__ = (Index("ix_alias_history_alias_id", "alias", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alias: Mapped[str] = mapped_column(NAME)
    artifact_name: Mapped[str | None] = mapped_column(NAME)
    kind: Mapped[str | None] = mapped_column(String(16))
    content_hash: Mapped[str | None] = mapped_column(HASH)
    # Both None: set before this history was kept, when and by whom unknown.
    set_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    set_by: Mapped[str | None] = mapped_column(String(128))


class FamilyDefault(Base):
    """The learngene a bare family name (``zoo materialize bert``) resolves to."""

    __tablename__ = "family_defaults"

    family: Mapped[str] = mapped_column(String(32), primary_key=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"))


class RegistryIdentity(Base):
    """One row: this registry's id. A blob store records the ids of the registries that
    use it, so gc and fsck --repair can refuse to sweep a store another registry shares."""

    __tablename__ = "registry_identity"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a uuid4
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutputRecord(Base):
    """An output folder being written: a row while the write runs, removed when it ends.

    A row that outlives its writer (killed) tells ``zoo fsck`` where to look for the
    temporary folder it left beside ``path``.
    """

    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A bearer token of ``zoo serve``: only its sha256 is kept, never the secret.

    Tokens are 256-bit random strings, so a fast hash is enough (nothing to brute-force);
    a revoked token keeps its row so the list shows who had access and until when."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(NAME, index=True)
    role: Mapped[str] = mapped_column(String(16))  # read | write | admin
    token_hash: Mapped[str] = mapped_column(HASH, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Refused from then on; None: valid until revoked (migration 0012).
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
