"""The ``zoo`` command. Each command parses, makes one API call, and prints.

Errors are mapped to one-line messages and exit codes here, once, in :func:`main`;
commands contain no try/except of their own. Data goes to stdout, messages to stderr.
Heavy modules (sqlalchemy, torch) are imported inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import sys
from pathlib import Path

import click
from zoo_cli import render

from zoo.text import is_utf8, printable

# click >= 8.2 raises this for a group called with nothing; older clicks print help themselves.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Names(click.Choice):
    """A choice among names that zoo's modules define (methods, rules, orders), read on
    first use: importing those modules costs a tenth of a `zoo ls` process that never
    looks at them."""

    def __init__(self, module: str, attribute: str) -> None:
        self._where = (module, attribute)
        super().__init__(())

    @property
    def choices(self):
        import importlib

        module, attribute = self._where
        return tuple(getattr(importlib.import_module(module), attribute))

    @choices.setter
    def choices(self, _value) -> None:  # click.Choice.__init__ sets it
        pass


def _registry():
    import zoo

    return zoo.connect()


def _streams(command):
    """For a command that streams weights through this process: large blocks are handed
    back to the system when freed (:mod:`zoo._malloc`), so its peak memory is what it
    holds, not what it held."""
    import functools

    @functools.wraps(command)
    def run(*args, **kwargs):
        from zoo._malloc import give_back_large_frees

        give_back_large_frees()
        return command(*args, **kwargs)

    return run


def _emit(ctx_json: bool, data, text: str) -> None:
    if ctx_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        click.echo(text)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _flag_word(command: click.Command, name: str, value: str | None) -> str:
    """A Python parameter a message names (``levels``, with the Python text of its value
    or None) as ``command``'s option (``--levels 2``) or argument (``NAME``); one that is
    not the command's own is the option of the same name (``kv_heads``: ``--kv-heads``)."""
    import shlex

    from zoo.errors import python_value

    param = next((p for p in command.params if p.name == name), None)
    if isinstance(param, click.Argument):
        flag = param.human_readable_name
    elif param is not None:
        flag = max(param.opts, key=lambda o: o.startswith("--"))
    else:
        flag = "--" + name.replace("_", "-")
    given = python_value(value)
    if value is None or given is True:  # --force: a flag on, or the option itself
        return flag
    if given is False:
        return f"no {flag}"
    if isinstance(given, str) and value[0] in "'\"":
        # Text as a shell takes it back ('/a b/c'), on the message's one line.
        return f"{flag} {shlex.quote(printable(given))}"
    return f"{flag} {given}"


# A registry method whose command has another name.
_COMMAND_OF = {"search": "ls", "list": "ls", "import_checkpoint": "import"}


def _command_words(method: str, arguments: str) -> str:
    """A registry call a message names (``reg.verify(repair=True)``) as the command that
    makes it (``zoo verify --repair``), each argument in that command's words; a bare
    name among them is a placeholder, said as it is (``reg.release_claim(ID)``)."""
    import ast
    import shlex

    name = _COMMAND_OF.get(method, method.replace("_", "-"))
    command = cli.commands.get(name)
    try:
        call = ast.parse(f"f({arguments})", mode="eval").body
        positional = [
            a.id if isinstance(a, ast.Name) else shlex.quote(printable(str(ast.literal_eval(a))))
            for a in call.args
        ]
    except (SyntaxError, ValueError):
        command = None
    if command is None:  # no command of that name: the call as it was written
        return f"reg.{method}({arguments})"
    options = [_flag_word(command, k.arg, ast.unparse(k.value)) for k in call.keywords]
    return " ".join(["zoo", name, *positional, *options])


def _in_flags(exc, command: click.Command) -> str:
    """The first line of a zoo error in the command's words: each Python parameter its
    message names (``levels=``, ``method='dct'``, ``force=True``) as the command's option
    (``--levels``, ``--method dct``, ``--force``) or argument (``NAME``), and each registry
    call it names (``reg.gc()``) as its command (``zoo gc``)."""
    from zoo.errors import reworded

    return reworded(exc, lambda name, value: _flag_word(command, name, value), _command_words)


def _warning_in_flags(line: str) -> str:
    """A registry's warning in the running command's words (``heads=4``: ``--heads 4``),
    as its errors are (:func:`_in_flags`)."""
    from zoo.errors import ZooError

    command = click.get_current_context().command
    named = [p.name for p in command.params if p.name and f"{p.name}=" in line]
    return _in_flags(ZooError(line, params=named), command)


class _Command(click.Command):
    """A zoo command: an error of the registry's that names its Python parameters names
    this command's options instead."""

    def invoke(self, ctx: click.Context):
        from zoo.errors import ZooError

        try:
            return super().invoke(ctx)
        except ZooError as exc:
            if exc.params or "reg." in str(exc):
                exc.args = (_in_flags(exc, self),)
                exc.params = ()
            raise


class _Group(click.Group):
    command_class = _Command
    group_class = type  # its groups are zoo groups too


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zoo", prog_name="zoo")
def cli() -> None:
    """zoo: a model-zoo registry and lineage database.

    State lives in ZOO_HOME (default ~/.zoo) unless ZOO_DB_URL / ZOO_STORE_URL or
    $ZOO_HOME/config.toml say otherwise; with ZOO_ENDPOINT and ZOO_TOKEN the registry's
    commands ask that zoo server instead (`zoo config show` says which is in effect).
    """


def _iso_moment(ctx, param, value: str | None) -> str | None:
    """Checked here too, so that the error names the option (the registry's names its
    Python parameter); the registry reads the text itself."""
    from datetime import datetime

    try:
        if value is not None:
            datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or time (e.g. 2026-12-01 or "
            "2026-12-01T14:30:00+01:00)"
        ) from None
    return value


@cli.command("import")
@click.argument("source")
@click.option(
    "--name",
    help="Registry name (default: the folder or repository name); for weights registered "
    "before, an alias.",
)
@click.option("--revision", help="Hub branch, tag or commit (for ORG/NAME sources).")
@click.option(
    "--convert-bin",
    is_flag=True,
    help="Accept a pickle .bin checkpoint, read with torch.load(weights_only=True).",
)
@json_option
@_streams
def import_cmd(
    source: str, name: str | None, revision: str | None, convert_bin: bool, as_json: bool
) -> None:
    """Register a checkpoint: a local HF folder, or ORG/NAME from the HF cache or Hub."""
    info = _registry().import_checkpoint(
        source, name=name, revision=revision, convert_bin=convert_bin, progress=sys.stderr.isatty()
    )
    if Path(source).is_dir():  # read here too: a server sees only the files sent to it
        from zoo.checkpoint.side_files import scan

        left = [entry.to_json() for entry in scan(Path(source)).left]
    else:
        left = render.not_kept(info)
    _emit(as_json, {**info.to_json(), "not_kept": left}, render.artifact_line(info))
    if left:
        click.echo(
            f"note: not kept, so an export lacks them: {render.entries(left, info.name)} (zoo "
            "keeps the weights, config, tokenizer, generation and processor configs, chat "
            "template, card, license files, the code an auto_map names and a "
            "sentence-transformers pipeline)",
            err=True,
        )
    if info.replaced_files:
        replaced = [{"name": f.name, "why": f.role} for f in info.replaced_files]
        click.echo(
            f"note: replaced {info.name}'s stored {render.entries(replaced, info.name)} by "
            "this folder's: what zoo writes from it carries the new ones",
            err=True,
        )


def _lacking(reg, name: str, out) -> list[dict]:
    """What the folder of the source ``name`` derives from (up zoo's own edges) held and
    zoo did not keep, so ``out`` lacks it; said on stderr."""
    from zoo.errors import NotFoundError

    try:
        info = reg.show(name)
        if info.kind != "source":
            graph = reg.lineage(info.name, down=False)
            todo, seen, info = [info.id], {info.id}, None
            while todo:
                node = todo.pop(0)
                if graph.nodes[node].kind == "source":
                    # A source removed since (kept for what derives from it) is not shown.
                    gone = graph.nodes[node].deleted
                    info = None if gone else reg.show(graph.nodes[node].name)
                    break
                for e in graph.edges:
                    up = e.child_id == node and e.relation in ("extract", "materialize")
                    if up and e.parent_id not in seen:
                        seen.add(e.parent_id)
                        todo.append(e.parent_id)
    except NotFoundError:
        # Removed by another process once the folder was written: the folder stands, and
        # the command that wrote it succeeded.
        return []
    left = render.not_kept(info) if info is not None else []
    if left:
        click.echo(
            f"note: {out} lacks files {info.name}'s folder held, which zoo did not keep: "
            f"{render.entries(left, info.name)}",
            err=True,
        )
    return left


LS_PAGE = 50  # artifacts on a page of `zoo ls`
HISTORY_PAGE = 50  # settings on a page of `zoo alias-history`


def _paging(page: int, limit_help: str):
    """A listing's --limit (``page`` by default) and --after, as `_next_page_command`
    repeats them."""

    def options(command):
        command = click.option(
            "--after", "cursor", help="Continue after this cursor (the previous page's next)."
        )(command)
        return click.option(
            "--limit",
            type=click.IntRange(min=0),
            default=page,
            show_default=True,
            help=limit_help,
        )(command)

    return options


@cli.command("ls")
@click.option(
    "--kind",
    type=click.Choice(["source", "learngene", "derived", "placeholder"]),
    help="Only artifacts of this kind.",
)
@click.option("--family", help="A family (any case) or a config's model_type (gemma3_text).")
@click.option("--all", "include_deleted", is_flag=True, help="Include removed artifacts.")
@click.option(
    "--name",
    "pattern",
    help="Names or aliases matching this glob (* and ?, any case); plain text: containing it.",
)
@click.option("--min-layers", type=click.IntRange(min=0), help="At least this many layers.")
@click.option("--max-layers", type=click.IntRange(min=0), help="At most this many layers.")
@click.option("--min-hidden", type=click.IntRange(min=0), help="A hidden size at least this.")
@click.option("--max-hidden", type=click.IntRange(min=0), help="A hidden size at most this.")
@click.option("--derived-from", help="Only what descends (at any depth) from this artifact.")
@click.option("--created-by", help="Only what this user registered.")
@click.option(
    "--created-after",
    callback=_iso_moment,
    help="ISO 8601 date or time, inclusive (UTC unless given).",
)
@click.option(
    "--created-before",
    callback=_iso_moment,
    help="ISO 8601 date or time, exclusive (UTC unless given).",
)
@_paging(LS_PAGE, "Artifacts per page (0: every match at once).")
@click.option("--oldest-first", is_flag=True, help="Oldest first (default: newest first).")
@json_option
def ls_cmd(
    kind,
    family,
    include_deleted,
    pattern,
    min_layers,
    max_layers,
    min_hidden,
    max_hidden,
    derived_from,
    created_by,
    created_after,
    created_before,
    limit,
    cursor,
    oldest_first,
    as_json,
) -> None:
    """List registered artifacts, a page at a time (newest first)."""
    import zoo.api

    # Read from the database without opening a registry (most of a `zoo ls` process was
    # importing SQLAlchemy); None where it cannot be (a server, a filter that needs a name
    # resolved or a time parsed), and the registry answers.
    page = None
    if derived_from is None and created_after is None and created_before is None:
        page = zoo.api.quick_page(
            kind=kind,
            family=family,
            include_deleted=include_deleted,
            name=pattern,
            min_layers=min_layers,
            max_layers=max_layers,
            min_hidden=min_hidden,
            max_hidden=max_hidden,
            created_by=created_by,
            limit=limit or None,
            after=cursor,
            newest_first=not oldest_first,
        )
    if page is None:
        page = _registry().search(
            kind=kind,
            family=family,
            include_deleted=include_deleted,
            name=pattern,
            min_layers=min_layers,
            max_layers=max_layers,
            min_hidden=min_hidden,
            max_hidden=max_hidden,
            derived_from=derived_from,
            created_by=created_by,
            created_after=created_after,
            created_before=created_before,
            limit=limit or None,
            after=cursor,
            newest_first=not oldest_first,
        )
    if as_json:
        # Compact: a whole library in one page stays quick to print and to parse.
        click.echo(json.dumps(page.to_json(), sort_keys=True, separators=(",", ":")))
        return
    narrowed = (kind, family, pattern, min_layers, max_layers, min_hidden, max_hidden)
    narrowed += (derived_from, created_by, created_after, created_before)
    if page.items or not (cursor or any(v is not None for v in narrowed)):
        click.echo(render.artifact_table(page.items))
    elif cursor:  # an empty library says how to fill it; an empty page says why it is
        click.echo("(no more artifacts after this cursor)")
    else:
        click.echo("(no artifact matches these filters)")
    if page.next is not None:
        click.echo(render.page_footer(page, _next_page_command(page.next)), err=True)


def _next_page_command(cursor: str) -> str:
    """The listing just run (`zoo ls`, `zoo alias-history`), with its arguments and
    options, continued after ``cursor``."""
    import shlex

    ctx = click.get_current_context()
    words = ["zoo", ctx.command.name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in ("cursor", "as_json") or value in (None, False):
            continue
        if isinstance(param, click.Argument):
            words.append(shlex.quote(str(value)))
            continue
        if param.name == "limit" and value == param.default:
            continue
        flag = max(param.opts, key=len)
        words += [flag] if param.is_flag else [flag, shlex.quote(str(value))]
    return " ".join([*words, "--after", cursor])


@cli.command("show")
@click.argument("name")
@click.option("--tensors", is_flag=True, help="Also list every tensor.")
@click.option(
    "--all", "include_deleted", is_flag=True, help="Also a removed artifact (until `zoo gc`)."
)
@json_option
def show_cmd(name: str, tensors: bool, include_deleted: bool, as_json: bool) -> None:
    """Show one artifact (by name, alias, content-hash prefix of 8+ hex digits or ORG/NAME)."""
    from zoo.api.learngene_format import short_bands

    info = _registry().show(name, include_deleted=include_deleted)
    data = info.to_json(with_tensors=tensors)
    if info.kind == "learngene":
        data["short_bands"] = short_bands(info)
    _emit(as_json, data, render.artifact_detail(info, tensors))


@cli.command("tag")
@click.argument("name")
@click.argument("alias")
@json_option
def tag_cmd(name: str, alias: str, as_json: bool) -> None:
    """Point ALIAS at the artifact NAME, saying where it pointed before."""
    reg = _registry()
    info, before = reg.point_alias(name, alias)
    moved = f" (was {before})" if before not in (None, info.name) else ""
    _emit(
        as_json,
        {
            "alias": alias,
            "artifact": info.to_json(),
            "previous": before,
            "moved": before not in (None, info.name),
        },
        f"{alias} -> {info.name}{moved}",
    )
    from zoo.families import FAMILY_NAMES

    if alias in FAMILY_NAMES:  # a family's own name: materialize means its default first
        default = reg.family_default(alias)
        if default is not None and default.id != info.id:
            reach = info.name if info.name not in FAMILY_NAMES else info.content_hash[:12]
            click.echo(
                f"note: `zoo materialize {alias}` means the family's default, "
                f"{default.name} (`zoo default`); {info.name} is `zoo materialize {reach}`",
                err=True,
            )


@cli.command("alias-history")
@click.argument("alias")
@_paging(HISTORY_PAGE, "Settings per page (0: every one at once).")
@json_option
def alias_history_cmd(alias: str, limit: int, cursor: str | None, as_json: bool) -> None:
    """Where ALIAS has pointed, a page at a time (newest first): when, by whom, which
    artifact."""
    settings = _registry().alias_history(alias, limit=limit or None, after=cursor)
    if as_json:
        _emit(True, settings.to_json(alias), "")
        return
    lines = [
        (
            f"{s.set_at.isoformat(timespec='seconds')}  {s.set_by}"
            if s.set_at
            else "(before zoo kept it)"
        )
        + (
            f"  {s.alias} -> {s.artifact_name} ({s.kind} {s.content_hash[:12]})"
            if s.artifact_name is not None
            else f"  {s.alias} gone with the artifact it named (zoo gc)"
        )
        for s in settings
    ]
    click.echo("\n".join(lines) if lines else "(no more settings after this cursor)")
    if settings.next is not None:
        click.echo(
            f"{len(settings)} settings shown; older ones: {_next_page_command(settings.next)}",
            err=True,
        )


@cli.group("db")
def db_group() -> None:
    """Database schema: upgrade, downgrade, current revision."""


def _raw_registry():
    """The configured database, at any schema, for `zoo db`; never in client mode, where
    the registry in use is the server's and a local file would be migrated instead."""
    from zoo.api import Registry
    from zoo.config import endpoint_from_env
    from zoo.errors import InvalidInputError

    if endpoint_from_env() is not None:
        raise InvalidInputError(
            "Schema migrations run where the database is: on the server's machine, without "
            "ZOO_ENDPOINT."
        )
    return Registry(check_schema=False)


def _say_waiting(line: str) -> None:
    click.echo(line, err=True)


# A relative revision (-1) is the argument, not an unknown option.
@db_group.command("upgrade", context_settings={"ignore_unknown_options": True})
@click.argument("revision", default="head")
@json_option
def db_upgrade(revision: str, as_json: bool) -> None:
    """Upgrade the schema to REVISION (default head)."""
    before, after = _raw_registry().db_upgrade(revision, on_wait=_say_waiting)
    text = f"schema {before or '(empty)'} -> {after}"
    if before == after:  # already there (also when another process upgraded it first)
        text = f"schema {after}: already there, nothing to upgrade"
    _emit(as_json, {"before": before, "after": after}, text)


# A relative revision (-1) is the argument, not an unknown option.
@db_group.command("downgrade", context_settings={"ignore_unknown_options": True})
@click.argument("revision")
@click.option(
    "--drop-data",
    "--drop-everything",
    "drop_data",
    is_flag=True,
    help="Needed when the downgrade deletes recorded data ('base': every artifact).",
)
@json_option
def db_downgrade(revision: str, drop_data: bool, as_json: bool) -> None:
    """Downgrade the schema to REVISION ('base' removes every table)."""
    before, after = _raw_registry().db_downgrade(
        revision, drop_data=drop_data, on_wait=_say_waiting
    )
    text = f"schema {before or '(empty)'} -> {after or '(empty)'}"
    if before == after:
        text = f"schema {after or '(empty)'}: already there, nothing to downgrade"
    _emit(as_json, {"before": before, "after": after}, text)


@db_group.command("current")
@json_option
def db_current(as_json: bool) -> None:
    """Print the database's schema revision and the one this zoo needs."""
    state = _raw_registry().db_current()
    text = f"current {state['current'] or '(empty)'}  head {state['head']}  ({state['state']})"
    _emit(as_json, state, text)


@cli.group("config")
def config_group() -> None:
    """Settings in effect."""


@config_group.command("show")
@json_option
def config_show(as_json: bool) -> None:
    """Print the settings in effect and where each comes from (secrets masked)."""
    from zoo.config import endpoint_from_env, load_settings, redact_url

    remote = endpoint_from_env()
    if remote is not None:  # client mode: the server's database and store are in effect
        endpoint, token = remote
        s = {
            "endpoint": f"{redact_url(endpoint)} (ZOO_ENDPOINT)",
            "token": "set (ZOO_TOKEN, hidden)" if token else "none (ZOO_TOKEN unset)",
            "registry": "the server's database and store; none is read here",
        }
    else:
        from zoo.db.engine import check_db_url
        from zoo.db.sqlite_file import missing_folder
        from zoo.errors import ZooError

        settings = load_settings()
        s = settings.redacted()
        try:  # shown as it is, and said to be wrong: the commands that open it refuse it
            url = check_db_url(settings.db_url, driver=True)
            folder = Path(url.database or "").expanduser().absolute().parent
            named = settings.db_url_from != "default"  # zoo's own home is made on first use
            if url.get_backend_name() == "sqlite" and named and not folder.is_dir():
                raise missing_folder(settings.db_url, folder)
        except ZooError as exc:
            items = list(s.items())  # the refusal beside the URL it is about
            items.insert(list(s).index("db_url_from") + 1, ("db_url_error", str(exc)))
            s = dict(items)
    width = max(15, *map(len, s))  # s3_endpoint_from widens the usual 15 columns
    text = "\n".join(f"{k:<{width}} {v}" for k, v in s.items())
    _emit(as_json, s, text)


@cli.command("extract")
@click.argument("source")
@click.option(
    "--method",
    type=_Names("zoo.methods", "LEARNGENE_METHODS"),
    default="dwt",
    show_default=True,
    help="dwt: the wavelet approximation bands (BoT); dct: the low-frequency DCT block (FRONT).",
)
@click.option("--wavelet", help="dwt: any discrete wavelet PyWavelets knows (default db2).")
@click.option(
    "--levels",
    type=int,
    help="dwt: decomposition levels to store (default 2; at most as many times as the "
    "source's axes halve exactly).",
)
@click.option("--keep", type=float, help="dct: kept fraction of each axis (default 0.5).")
@click.option(
    "--order",
    type=_Names("zoo.unit_order", "ORDERS"),
    default="stored",
    show_default=True,
    help="Unit order the transform sees: as stored, or chained by similarity or "
    "dissimilarity (function unchanged).",
)
@click.option(
    "--name", help="Registry name for a new learngene; for one extracted before, an alias."
)
@click.option("--device", help="cpu or cuda (default: $ZOO_DEVICE, else cpu).")
@json_option
@_streams
def extract_cmd(source, method, wavelet, levels, keep, order, name, device, as_json) -> None:
    """Extract a learngene (wavelet bands or DCT block) from SOURCE, once."""
    from zoo.api.learngene_format import short_bands

    info = _registry().extract(
        source,
        method=method,
        wavelet=wavelet,
        levels=levels,
        keep=keep,
        order=order,
        name=name,
        device=device,
    )
    short = short_bands(info)
    _emit(as_json, {**info.to_json(), "short_bands": short}, render.artifact_line(info))
    for line in render.short_bands(info, short, every=False):
        click.echo(f"note: {info.name}: {line}", err=True)


@cli.command("materialize")
@click.argument("name")
@click.option("--layers", type=int, required=True, help="Target number of layers.")
@click.option("--hidden", type=int, required=True, help="Target hidden size.")
@click.option("--heads", type=int, help="Attention heads (default: keep head_dim).")
@click.option("--intermediate", type=int, help="FFN size (default: keep the source's ratio).")
@click.option(
    "--kv-heads",
    type=int,
    help="Key/value heads (grouped-query attention); default: the source's query heads per "
    "kv head, or more per kv head where the head count does not allow it.",
)
@click.option(
    "--method",
    type=_Names("zoo.methods", "METHODS"),
    help="How the target is made (default: a learngene's own method, else zoo's measured "
    "default for the family and direction).",
)
@click.option(
    "--wavelet",
    help="dwt: the wavelet (default: the learngene's, else db2).",
)
@click.option(
    "--rescale",
    type=_Names("zoo.methods", "RESCALES"),
    help="Amplitude rule for dwt/dct (none: raw, as the papers; default: "
    "zoo's measured default for the family and direction).",
)
@click.option("--seed", type=int, help="For the methods that draw: scratch, net2net (default 0).")
@click.option(
    "--norm",
    type=_Names("zoo.derive", "NORMS"),
    help="Norm layers: resized by the method, or matched to the source's moments.",
)
@click.option(
    "--depth",
    type=_Names("zoo.derive", "DEPTHS"),
    help="Added layers: by the method, or as copies that start as identities "
    "(default: zoo's measured default).",
)
@click.option(
    "--order",
    type=_Names("zoo.unit_order", "ORDERS"),
    help="Unit order the method sees: as stored, or chained by similarity or dissimilarity "
    "(function unchanged; default: a learngene's own order, else stored).",
)
@click.option(
    "--dtype",
    type=_Names("zoo.derive", "DTYPES"),
    default="auto",
    show_default=True,
    help="Floating-point dtype of the result (auto: each tensor's source dtype).",
)
@click.option(
    "--device",
    help="cpu or cuda (default: $ZOO_DEVICE, else cuda when a GPU is available, else cpu).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Write an HF folder here, streamed: the whole model is never in memory.",
)
@click.option("--force", is_flag=True, help="Replace a previous --out folder of zoo's.")
@click.option(
    "--max-shard-size",
    help="Bytes per weights file in --out, e.g. 500MB or 2GiB [default: 5GB].",
)
@click.option("--store", is_flag=True, help="Keep the weights in the registry too.")
@json_option
@_streams
def materialize_cmd(name: str, as_json: bool, **options) -> None:
    """Materialize a model of any size from NAME (learngene, source, alias or family)."""
    # The command prints the record: each tensor is let go once hashed (and stored), so a
    # target larger than memory is recorded as it is written with --out.
    reg = _registry()
    result = reg.materialize(name, return_weights=False, **options)
    data = {
        "artifact": result.artifact.to_json(),
        "config": result.config,
        "out": str(result.out) if result.out else None,
    }
    text = render.artifact_line(result.artifact)
    if result.out:
        text += f"\nwrote {result.out}"
        data["not_kept"] = _lacking(reg, result.artifact.name, result.out)
    data["warnings"] = [_warning_in_flags(line) for line in result.warnings]
    for line in data["warnings"]:
        click.echo(f"warning: {line}", err=True)
    _emit(as_json, data, text)


@cli.command("rederive")
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False), help="Write an HF folder here.")
@click.option("--force", is_flag=True, help="Replace a previous --out folder of zoo's.")
@click.option("--device", help="Override the recorded device.")
@click.option("--max-shard-size", help="Bytes per weights file in --out [default: 5GB].")
@json_option
@_streams
def rederive_cmd(name, as_json, **options) -> None:
    """Re-derive a derived checkpoint from its recipe and verify it bit for bit."""
    reg = _registry()
    result = reg.rederive(name, return_weights=False, **options)
    text = f"{result.artifact.name}: re-derived bit for bit ({result.artifact.content_hash[:12]})"
    data = {
        "artifact": result.artifact.to_json(),
        "verified": True,
        "out": str(result.out) if result.out else None,
    }
    if result.out:
        text += f"\nwrote {result.out}"
        data["not_kept"] = _lacking(reg, result.artifact.name, result.out)
    _emit(as_json, data, text)


@cli.command("export")
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="The HF folder.")
@click.option("--force", is_flag=True, help="Replace a previous --out folder of zoo's.")
@click.option("--max-shard-size", help="Bytes per weights file [default: 5GB].")
@json_option
@_streams
def export_cmd(name, as_json, **options) -> None:
    """Write a source or derived checkpoint as an HF folder, streamed (a virtual one is
    re-derived and verified as it is written)."""
    reg = _registry()
    # What NAME names now, exported by its registry name: the JSON says which artifact
    # the folder holds (its content hash), as materialize's and rederive's do.
    info = reg.show(name)
    out = reg.export(info.name, **options)
    left = _lacking(reg, info.name, out)
    _emit(
        as_json,
        {"artifact": info.to_json(), "out": str(out), "not_kept": left},
        f"wrote {out}",
    )


@cli.command("default")
@click.argument("family")
@click.argument("name", required=False)
@json_option
def default_cmd(family, name, as_json) -> None:
    """Make learngene NAME the default that `zoo materialize FAMILY` uses; without NAME,
    print the one set."""
    from zoo.errors import NotFoundError

    reg = _registry()
    if name is None:
        info = reg.family_default(family)
        family = family.lower() if info is None else info.family
        _emit(
            as_json,
            {"family": family, "learngene": None if info is None else info.to_json()},
            f"{family}: no default set" if info is None else f"{family} -> {info.name}",
        )
        return
    info = reg.set_default(family, name)
    family = info.family  # the family's own name, however it was typed
    _emit(as_json, {"family": family, "learngene": info.to_json()}, f"{family} -> {info.name}")
    try:  # an artifact named like the family: materialize now means the default instead
        shadowed = reg.show(family)
    except NotFoundError:
        return
    if shadowed.id != info.id:
        click.echo(
            f"note: `zoo materialize {family}` means {info.name} now; the {shadowed.kind} "
            f"{shadowed.name} is `zoo materialize {shadowed.content_hash[:12]}`",
            err=True,
        )


@cli.command("lineage")
@click.argument("name")
@click.option("--up", is_flag=True, help="Ancestors (only, unless --down too).")
@click.option("--down", is_flag=True, help="Descendants (only, unless --up too).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "dot", "mermaid"]),
    default="text",
    show_default=True,
    help="text for people (a parent's first 20 children by one relation, then how many "
    "more), json for scripts, dot (Graphviz) or mermaid for a diagram.",
)
@click.option(
    "--depth", type=click.IntRange(min=0), help="At most this many edges away (default: all)."
)
@click.option(
    "--all",
    "include_deleted",
    is_flag=True,
    help="NAME may be a removed artifact (until `zoo gc`).",
)
def lineage_cmd(name, up, down, fmt, depth, include_deleted) -> None:
    """Ancestors and descendants of NAME, with each edge's recipe."""
    both = up == down  # neither flag, or both: the whole neighbourhood
    graph = _registry().lineage(
        name, up=up or both, down=down or both, depth=depth, include_deleted=include_deleted
    )
    if fmt == "json":
        click.echo(json.dumps(graph.to_json(), indent=2, sort_keys=True, default=str))
    else:
        click.echo({"text": graph.to_text, "dot": graph.to_dot, "mermaid": graph.to_mermaid}[fmt]())


@cli.command("link")
@click.argument("child")
@click.option("--from", "parent", required=True, help="The parent artifact.")
@click.option(
    "--relation",
    default="finetune",
    show_default=True,
    help="How CHILD was made: a lowercase word (finetune, distill, quantize...).",
)
@click.option("--note", help="Free text kept on the edge.")
@json_option
def link_cmd(child, parent, relation, note, as_json) -> None:
    """Declare that CHILD was made from a parent outside zoo (e.g. a fine-tune)."""
    edge = _registry().link(child, parent, relation=relation, note=note)
    # The artifacts the names resolved to (an alias, a hash prefix), as `zoo tag` says.
    parent, child = edge.parent_name or parent, edge.child_name or child
    _emit(as_json, edge.to_json(), f"{parent} --{relation}--> {child}")
    kept = (edge.recipe or {}).get("note") or ""
    if note is not None and note != kept:  # declared before: a declaration is not redone
        click.echo(
            f"note: {parent} --{relation}--> {child} was declared before; its note stays {kept!r}",
            err=True,
        )


@cli.command("audit")
@click.argument("path", type=click.Path(exists=True))
@click.option(
    "--verify",
    is_flag=True,
    help="When it is a derived checkpoint, re-derive it and compare hashes.",
)
@click.option(
    "--convert-bin",
    is_flag=True,
    help="Read pickle weights (pytorch_model.bin) with torch.load(weights_only=True).",
)
@json_option
@_streams
def audit_cmd(path, verify, convert_bin, as_json) -> None:
    """Identify a checkpoint folder or .safetensors file by content, with its ancestry.

    Exit 10 unless it is a known artifact (a modified or unknown one), 6 when --verify
    re-derives other bytes.
    """
    report = _registry().audit(path, verify=verify, convert_bin=convert_bin)
    _emit(as_json, report.to_json(), report.to_text())
    if report.status != "known":
        sys.exit(NOT_KNOWN)
    if report.verified is False:
        sys.exit(DAMAGE_FOUND)


# --- maintenance of a shared registry ----------------------------------------------------

# Exit status of fsck, verify and audit --verify when they find damage (the code of
# BlobMissingError), and of audit when a file is not a known artifact.
DAMAGE_FOUND = 6
# verify's, when the worst it found is a blob this user may not read (StorageError's code).
UNREADABLE = 11
# fsck's, with no damage, when orphans or killed writers' leftovers remain: a script
# tells them from a clean store (0).
LEFTOVERS_FOUND = 13
NOT_KNOWN = 10
grace_option = click.option(
    "--grace",
    default="24h",
    show_default=True,
    help="Leave blobs and temporary files younger than this (e.g. 30m, 24h, 7d; longer "
    "than any write running meanwhile, and 0 only while none runs).",
)


@cli.command("rm")
@click.argument("name")
@click.option(
    "--cascade",
    is_flag=True,
    help="Also remove what zoo made from it (learngenes, materialized sizes); checkpoints "
    "declared as made from it (zoo link, a card's base_model) stay.",
)
@json_option
def rm_cmd(name: str, cascade: bool, as_json: bool) -> None:
    """Remove an artifact (`zoo gc` sweeps its blobs once they are older than its --grace)."""
    infos = _registry().rm(name, cascade=cascade)
    _emit(as_json, [i.to_json() for i in infos], "\n".join(f"removed {i.name}" for i in infos))


@cli.command("gc")
@grace_option
@click.option("--dry-run", is_flag=True, help="Report what would be removed; change nothing.")
@json_option
def gc_cmd(grace: str, dry_run: bool, as_json: bool) -> None:
    """Sweep blobs nothing kept needs, then forget removed artifacts for good."""
    report = _registry().gc(grace=grace, dry_run=dry_run)
    _emit(as_json, report.to_json(), render.gc_report(report))


@cli.command("fsck")
@click.option(
    "--repair",
    is_flag=True,
    help="Remove orphan blobs and leftovers of killed writers (never referenced data).",
)
@grace_option
@json_option
def fsck_cmd(repair: bool, grace: str, as_json: bool) -> None:
    """Check that every kept row's blobs are in the store; list orphans and leftovers.

    Exit 6 on damage, else 13 when orphans or leftovers remain that --repair or `zoo gc`
    clears, 0 only for a clean store."""
    report = _registry().fsck(repair=repair, grace=grace)
    _emit(as_json, report.to_json(), render.fsck_report(report))
    if not report.ok:
        sys.exit(DAMAGE_FOUND)
    if report.left:
        sys.exit(LEFTOVERS_FOUND)


@cli.command("verify")
@click.argument("name", required=False)
@click.option(
    "--repair",
    is_flag=True,
    help="Restore damaged blobs zoo can produce again (learngenes, stored derived "
    "checkpoints, sources whose folder is still here).",
)
@json_option
@_streams
def verify_cmd(name: str | None, repair: bool, as_json: bool) -> None:
    """Re-hash stored blobs (all, or those NAME needs); exit 6 on any damage left, else
    11 when a blob could not be read."""
    report = _registry().verify(name, repair=repair)
    _emit(as_json, report.to_json(), render.verify_report(report))
    if report.damaged:
        sys.exit(DAMAGE_FOUND)
    if not report.ok:
        sys.exit(UNREADABLE)


@cli.command("release-claim")
@click.argument("registry_id")
@click.option(
    "--retired",
    is_flag=True,
    help="The database the claim names is retired for good: for a claim zoo cannot check "
    "(another host's, one naming no database or unreadable, one whose file at its path is "
    "another now, such as a restored backup).",
)
@json_option
def release_claim_cmd(registry_id: str, retired: bool, as_json: bool) -> None:
    """Release a registry's claim on the store once the database it names is gone:
    another registry's claim is removed (this one's gc may then sweep its blobs); this
    registry's own, held by the file it was copied or moved from, passes to this one."""
    from zoo.config import endpoint_from_env
    from zoo.errors import InvalidInputError

    if endpoint_from_env() is not None:  # it looks for database files on this machine
        raise InvalidInputError(
            "zoo release-claim runs where the database is: on the server's machine, without "
            "ZOO_ENDPOINT."
        )
    report = _registry().release_claim(registry_id, retired=retired)
    _emit(as_json, report.to_json(), render.claim_release(report))


@cli.group("bench")
def bench_group() -> None:
    """Benchmarks: what zoo's initializations are worth in training steps."""


@bench_group.command("transfer")
@click.option(
    "--family",
    type=click.Choice(["gpt2", "bert", "llama"]),
    help="Model family (default: the source's; gpt2 when training one).",
)
@click.option(
    "--direction",
    type=click.Choice(["l2s", "s2l"]),
    default="l2s",
    show_default=True,
    help="l2s: large to small (shrink); s2l: small to large (grow).",
)
@click.option(
    "--source",
    help="A registered source to transfer from, e.g. a real checkpoint read in its own "
    "tokenizer (default: train a small one on bytes).",
)
@click.option("--source-size", help="LAYERSxHIDDEN of a source trained here (default 4x128).")
@click.option(
    "--target-size",
    help="LAYERSxHIDDEN (default: half for l2s, double for s2l, in whole heads).",
)
@click.option("--methods", help="Comma-separated, e.g. scratch,weight-selection,dwt:db2:fan.")
@click.option(
    "--seeds", type=int, default=3, show_default=True, help="Runs per method (seeds 0..N-1)."
)
@click.option(
    "--steps", type=int, default=400, show_default=True, help="Training steps of each target."
)
@click.option(
    "--source-steps",
    type=int,
    default=600,
    show_default=True,
    help="Training steps of a source trained here; 0: until its validation loss is flat.",
)
@click.option("--batch", type=int, default=8, show_default=True, help="Sequences per step.")
@click.option("--seq", type=int, default=64, show_default=True, help="Tokens per sequence.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Write transfer-FAMILY-DIRECTION.json and .png here.",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where the targets train (cuda: bf16 autocast, the same batches).",
)
@click.option(
    "--text",
    "text_dir",
    type=click.Path(file_okay=False, exists=True),
    help="A folder of *.txt files to read instead of Python's documentation (with a "
    "--source that has a tokenizer).",
)
@json_option
def bench_transfer_cmd(
    family,
    direction,
    source,
    source_size,
    target_size,
    methods,
    seeds,
    steps,
    source_steps,
    batch,
    seq,
    out_dir,
    device,
    text_dir,
    as_json,
) -> None:
    """Train each initialization on the same batches; compare with scratch and baselines."""
    import os

    from zoo.bench.transfer import markdown_table, run_transfer

    report = run_transfer(
        family,
        direction,
        source_size,
        target_size,
        methods=methods.split(",") if methods is not None else None,
        seeds=seeds,
        steps=steps,
        source=source,
        home=os.environ.get("ZOO_HOME") if source else None,
        source_steps=source_steps,
        batch=batch,
        seq=seq,
        out_dir=out_dir,
        progress=sys.stderr.isatty(),
        device=device,
        text_dir=text_dir,
    )
    _emit(as_json, report, markdown_table(report))


# --- the server, and who may use it -------------------------------------------------------


@cli.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on (0: any free one).",
)
@click.option("--public-read", is_flag=True, help="Let requests without a token read.")
@click.option(
    "--max-upload",
    default="256GB",
    show_default=True,
    help="Largest upload accepted (a checkpoint's files, for import and audit), e.g. "
    "500MB; other request bodies are bounded far below it.",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    help="Folder for the files it serves (default: $ZOO_HOME/serve-cache).",
)
@click.option(
    "--cache-limit",
    help="The most the cache keeps, e.g. 200GB (default: no limit); the folders used least "
    "recently go first, and are built again when asked for.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Derivation threads.",
)
@click.option(
    "--shutdown-timeout",
    default="20s",
    show_default=True,
    help="How long a stopping server (SIGTERM, Ctrl-C) lets requests in flight (an upload, "
    "a download, a materialize) finish before it cuts them; under your service manager's "
    "own stop timeout.",
)
@click.option(
    "--link-key-file",
    help="A file holding the key download links are signed with (32 bytes or more), for "
    "servers behind one load balancer, which then take each other's links, and links that "
    "outlive a restart (default: a key drawn at start).",
)
@click.option(
    "--root-path",
    default="",
    help="The path a reverse proxy serves it under, e.g. /zoo for https://host/zoo/, whether "
    "the proxy strips it or passes it on: the page's links, download links and redirects "
    "carry it.",
)
@_streams
def serve_cmd(
    host,
    port,
    public_read,
    max_upload,
    cache,
    cache_limit,
    workers,
    shutdown_timeout,
    link_key_file,
    root_path,
) -> None:
    """Serve the registry over HTTP: REST API, Hugging Face downloads, web page."""
    from zoo.server import ServerOptions, serve

    serve(
        None,  # the configured database and store, never a server's (ZOO_ENDPOINT)
        ServerOptions(
            host=host,
            port=port,
            public_read=public_read,
            max_upload=max_upload,
            cache=cache,
            cache_limit=cache_limit,
            workers=workers,
            shutdown_timeout=shutdown_timeout,
            link_key_file=link_key_file,
            root_path=root_path,
        ),
    )


@cli.group("token")
def token_group() -> None:
    """Bearer tokens for `zoo serve`: create, list, revoke."""


@token_group.command("create")
@click.option("--name", required=True, help="Who or what holds it, e.g. ci or alice.")
@click.option(
    "--role",
    type=click.Choice(["read", "write", "admin"]),
    default="read",
    show_default=True,
    help="read: list, show, download; write: also import, materialize, tag, rm; admin: "
    "also gc, fsck, verify, default, tokens.",
)
@click.option(
    "--expires",
    default=None,
    help="When the server starts refusing it: a duration (30d, 12h, 2w) or an ISO date or "
    "time in UTC (2027-01-31, 2027-01-31T18:00). Default: never (until revoked).",
)
@json_option
def token_create(name: str, role: str, expires: str | None, as_json: bool) -> None:
    """Create a token and print its secret (shown only this once)."""
    info, secret = _registry().create_token(name, role=role, expires=expires)
    _emit(as_json, {**info.to_json(), "secret": secret}, secret)
    if not as_json:
        until = (
            f", expires {info.expires_at.isoformat(timespec='seconds')}" if info.expires_at else ""
        )
        click.echo(
            f"token {info.name} ({info.role}{until}): keep the line above, it is not stored",
            err=True,
        )


@token_group.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@json_option
def token_list(include_revoked: bool, as_json: bool) -> None:
    """List tokens (never their secrets), with when each expires and whether it has."""
    infos = _registry().list_tokens(include_revoked=include_revoked)
    _emit(as_json, [i.to_json() for i in infos], render.token_table(infos))


@token_group.command("revoke")
@click.argument("name")
@json_option
def token_revoke(name: str, as_json: bool) -> None:
    """Revoke the active token NAME; the server refuses it from now on."""
    infos = _registry().revoke_token(name)
    _emit(as_json, [i.to_json() for i in infos], "\n".join(f"revoked {i.name}" for i in infos))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning zoo's errors into one line + exit code."""
    if sys.stdout is None:  # started with stdout closed (`>&-`): what it prints would be lost
        click.echo("zoo: error: standard output is closed; nothing could be printed.", err=True)
        sys.exit(2)
    for stream in (sys.stdout, sys.stderr):
        # A terminal in another encoding (Latin-1) shows what it cannot print escaped, not
        # a UnicodeEncodeError traceback in place of the output.
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    for arg in sys.argv[1:] if argv is None else argv:
        # Python keeps bytes that are not UTF-8 (a Latin-1 terminal's) as lone surrogates,
        # which no database, file name or JSON of zoo's can take.
        if not arg.isascii() and not is_utf8(arg):
            click.echo(
                f"zoo: error: the argument {arg!a} is not UTF-8 text; zoo reads "
                "its names, paths and options as UTF-8.",
                err=True,
            )
            sys.exit(2)
    try:
        cli.main(args=argv, prog_name="zoo", standalone_mode=False)
    except click.exceptions.Abort as exc:  # click's, for a KeyboardInterrupt it caught
        _tell_stopped(_interruption(exc.__cause__, "aborted"))
        sys.exit(130)
    except _NO_ARGS_IS_HELP as exc:  # a bare `zoo` or `zoo db`: the help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # One line like every other error, with where to read the usage.
        where = exc.ctx.command_path if exc.ctx is not None else "zoo"
        message = exc.format_message().strip().splitlines()[0].removesuffix(".")
        click.echo(f"zoo: error: {message} (see `{where} --help`).", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"zoo: error: {exc.format_message().strip().splitlines()[0]}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        _tell_stopped(_interruption(exc, "interrupted"))
        sys.exit(130)
    except BrokenPipeError:  # `zoo ls | head`: the reader is gone, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        from zoo.errors import EXIT_DATABASE, EXIT_STORAGE, ZooError

        if not isinstance(exc, ZooError):
            if _is_connection_option_error(exc):  # the URL's own fault, not the server's
                click.echo(f"zoo: error: Database URL: {_first_line(exc.orig)}.", err=True)
                sys.exit(2)
            if _is_database_error(exc):
                from zoo.db.engine import no_room

                # A full disk is the file system's refusal, as for any other write; the
                # driver's words do not say which database (or disk) it is.
                full = no_room(getattr(exc, "orig", None))
                where = (
                    f" (the database {_database_named()}: its disk is full; free space there "
                    "and run the command again: the registry recorded none of it)"
                    if full
                    else ""
                )
                click.echo(f"zoo: error: database error: {_first_line(exc)}{where}", err=True)
                sys.exit(EXIT_STORAGE if full else EXIT_DATABASE)
            if _is_storage_error(exc):
                click.echo(f"zoo: error: {_storage_message(exc)}", err=True)
                sys.exit(EXIT_STORAGE)
            if (message := _out_of_memory(exc)) is not None:
                from zoo.errors import DeviceUnavailableError

                click.echo(f"zoo: error: {message}", err=True)
                sys.exit(DeviceUnavailableError.exit_code)
            raise
        click.echo(f"zoo: error: {_first_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(0)


def _interruption(exc: BaseException | None, plain: str) -> str:
    """What Ctrl-C (or SIGTERM, or SIGHUP) stopped: ``plain``, unless it came after the
    work was complete and kept."""
    from zoo.errors import InterruptedAfterWriting

    if isinstance(exc, InterruptedAfterWriting):  # what to run next, as its command
        from zoo.errors import reworded

        return reworded(exc, lambda name, value: name, _command_words)
    if not _terminated:
        return plain
    return "hung up" if _terminated[0] == signal.SIGHUP else "terminated"


def _tell_stopped(what: str) -> None:
    """Say why the command stopped, if anyone can still read it: after SIGHUP the terminal
    is gone, and writing to it fails (EIO), which must not cost the exit status."""
    with contextlib.suppress(OSError):
        click.echo(f"zoo: {what}", err=True)


# SIGTERM (`timeout`, `kill`, a scheduler cancelling a job) or SIGHUP (the terminal or
# the ssh session the command ran in closed), once received.
_terminated: list[int] = []
_STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _terminate(signum: int, frame) -> None:
    """End the command as Ctrl-C does, through whatever handles SIGINT now: its cleanups
    run (an --out's hidden folder is removed), and a rename and its row that hold Ctrl-C
    back hold this back too. The default action killed the process where it stood."""
    _terminated.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # Ctrl-C ignored (a script's background job): this still ends the command
        raise KeyboardInterrupt


def _database_named() -> str:
    """The database in effect, its password masked."""
    from zoo.config import load_settings, redact_url

    return redact_url(load_settings().db_url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# What the environment, not zoo, got wrong: full disks, permissions, a file where a folder
# should be. Any other OSError is unexpected and keeps its traceback.
_STORAGE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENOENT,
    errno.EMFILE,
    errno.ENAMETOOLONG,
}


def _is_storage_error(exc: BaseException) -> bool:
    from zoo.store.base import is_object_store_error

    if is_object_store_error(exc):
        return True
    return isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS


def _storage_message(exc: BaseException) -> str:
    """``No space left on device: /path`` rather than ``[Errno 28] ...: '/path'``."""
    from zoo.store.base import is_object_store_error

    if is_object_store_error(exc):
        return f"object store: {_first_line(exc)}"
    where = exc.filename if exc.filename is not None else ""
    return f"{exc.strerror}: {where}" if where != "" else str(exc.strerror)


def _out_of_memory(exc: BaseException) -> str | None:
    """The one line for an allocation the system refused (a memory limit such as
    ``ulimit -v``, a GPU that is full), or None for any other error. Memory that runs
    out under a limit zoo does not see is the machine's, not a fault of zoo's."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", ()) if torch is not None else ()
    if isinstance(exc, oom):
        text = _first_line(exc)
    elif isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    ):
        text = str(exc)
    else:
        return None
    asked = re.search(r"tried to allocate (\d+) bytes|Tried to allocate ([\d.]+ [KMGT]iB)", text)
    if asked is None:
        what = ""
    elif asked.group(1) is not None:
        from zoo.api.export import decimal_bytes

        what = f" (an allocation of {decimal_bytes(int(asked.group(1)))} was refused)"
    else:
        what = f" (an allocation of {asked.group(2)} was refused)"
    return f"out of memory{what}; free memory or raise the limit, or ask for a smaller size."


def _is_database_error(exc: BaseException) -> bool:
    mod = sys.modules.get("sqlalchemy.exc")
    return mod is not None and isinstance(exc, mod.SQLAlchemyError)


def _is_connection_option_error(exc: BaseException) -> bool:
    """A connection refused before it reached the server: libpq rejected an option of the
    database URL (``?bogus=1``, ``?connect_timeout=abc``). No statement was running, and
    the driver's error has no SQLSTATE (a permission denied has one)."""
    mod = sys.modules.get("sqlalchemy.exc")
    return (
        mod is not None
        and isinstance(exc, mod.ProgrammingError)
        and exc.statement is None
        and getattr(exc.orig, "sqlstate", None) is None
    )


def command() -> None:
    """The ``zoo`` process: :func:`main`, then its exit. SIGTERM and SIGHUP end it as
    Ctrl-C does (exit 143 and 129); a SIGHUP ignored by whoever started it (``nohup``)
    stays ignored.

    Once the command has finished, Ctrl-C has nothing left to stop, so it is ignored
    through the interpreter's teardown (torch's takes up to a second; an interrupt there
    killed a process that had written and printed its result). After an interrupt the
    process leaves at once, its cleanups done: torch's worker threads may still be running,
    and tearing the runtime down under them can abort the process (SIGABRT)."""
    for stopping in _STOPPING_SIGNALS:
        if signal.getsignal(stopping) is signal.SIG_DFL:
            signal.signal(stopping, _terminate)
    try:
        main()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stopping in _STOPPING_SIGNALS:  # as Ctrl-C: the command is done
        if signal.getsignal(stopping) is _terminate:
            signal.signal(stopping, signal.SIG_IGN)
    if code == 130:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a hung-up terminal, a closed one
                if stream is not None:
                    stream.flush()
        os._exit(128 + _terminated[0] if _terminated else 130)  # as a shell reports it
    sys.exit(code)


if __name__ == "__main__":
    command()
