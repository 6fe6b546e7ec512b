"""The ``zoo`` command. Each command parses, makes one API call, and prints.

Errors are mapped to one-line messages and exit codes here, once, in :func:`main`;
commands contain no try/except of their own. Data goes to stdout, messages to stderr.
Heavy modules (sqlalchemy, torch) are imported inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import sys

import click

from zoo_cli import render

# Exit codes by error class, most specific first.
EXIT_CODES = (
    ("InvalidInputError", 2),
    ("InvalidCheckpointError", 2),
    ("NotFoundError", 3),
    ("AmbiguousNameError", 3),
    ("ConflictError", 4),
    ("SchemaOutdatedError", 5),
    ("BlobMissingError", 6),
    ("BlobCorruptError", 6),
    ("VerificationError", 6),
    ("DeviceUnavailableError", 7),
    ("OfflineError", 8),
    ("ZooError", 1),
)


def _registry():
    import zoo

    return zoo.connect()


def _emit(ctx_json: bool, data, text: str) -> None:
    if ctx_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        click.echo(text)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zoo", prog_name="zoo")
def cli() -> None:
    """zoo: a model-zoo registry and lineage database.

    State lives in ZOO_HOME (default ~/.zoo) unless ZOO_DB_URL / ZOO_STORE_URL say
    otherwise.
    """


@cli.command("import")
@click.argument("source")
@click.option("--name", help="Registry name (default: the folder or repository name).")
@click.option("--revision", help="Hub branch, tag or commit (for ORG/NAME sources).")
@click.option("--convert-bin", is_flag=True,
              help="Accept a pickle .bin checkpoint, read with torch.load(weights_only=True).")
@json_option
def import_cmd(source: str, name: str | None, revision: str | None, convert_bin: bool,
               as_json: bool) -> None:
    """Register a checkpoint: a local HF folder, or ORG/NAME from the HF cache or Hub."""
    info = _registry().import_checkpoint(source, name=name, revision=revision,
                                         convert_bin=convert_bin, progress=sys.stderr.isatty())
    _emit(as_json, info.to_json(), render.artifact_line(info))


@cli.command("ls")
@click.option("--kind", type=click.Choice(["source", "learngene", "derived"]))
@click.option("--family")
@click.option("--all", "include_deleted", is_flag=True, help="Include removed artifacts.")
@json_option
def ls_cmd(kind: str | None, family: str | None, include_deleted: bool, as_json: bool) -> None:
    """List registered artifacts."""
    infos = _registry().list(kind=kind, family=family, include_deleted=include_deleted)
    _emit(as_json, [i.to_json() for i in infos], render.artifact_table(infos))


@cli.command("show")
@click.argument("name")
@click.option("--tensors", is_flag=True, help="Also list every tensor.")
@json_option
def show_cmd(name: str, tensors: bool, as_json: bool) -> None:
    """Show one artifact (by alias, name or content-hash prefix)."""
    info = _registry().show(name)
    _emit(as_json, info.to_json(with_tensors=tensors), render.artifact_detail(info, tensors))


@cli.command("tag")
@click.argument("name")
@click.argument("alias")
@json_option
def tag_cmd(name: str, alias: str, as_json: bool) -> None:
    """Point ALIAS at the artifact NAME."""
    info = _registry().tag(name, alias)
    _emit(as_json, {"alias": alias, "artifact": info.to_json()}, f"{alias} -> {info.name}")


@cli.group("db")
def db_group() -> None:
    """Database schema: upgrade, downgrade, current revision."""


def _raw_registry():
    from zoo.api import Registry

    return Registry(check_schema=False)


@db_group.command("upgrade")
@click.argument("revision", default="head")
@json_option
def db_upgrade(revision: str, as_json: bool) -> None:
    """Upgrade the schema to REVISION (default head)."""
    before, after = _raw_registry().db_upgrade(revision)
    _emit(as_json, {"before": before, "after": after}, f"schema {before or '(empty)'} -> {after}")


@db_group.command("downgrade")
@click.argument("revision")
@json_option
def db_downgrade(revision: str, as_json: bool) -> None:
    """Downgrade the schema to REVISION ('base' removes every table)."""
    before, after = _raw_registry().db_downgrade(revision)
    _emit(as_json, {"before": before, "after": after},
          f"schema {before or '(empty)'} -> {after or '(empty)'}")


@db_group.command("current")
@json_option
def db_current(as_json: bool) -> None:
    """Print the database's schema revision and the one this zoo needs."""
    state = _raw_registry().db_current()
    text = f"current {state['current'] or '(empty)'}  head {state['head']}"
    _emit(as_json, state, text)


@cli.group("config")
def config_group() -> None:
    """Settings in effect."""


@config_group.command("show")
@json_option
def config_show(as_json: bool) -> None:
    """Print the settings in effect and where each comes from (secrets masked)."""
    from zoo.config import load_settings

    s = load_settings().redacted()
    text = "\n".join(f"{k:<15} {v}" for k, v in s.items())
    _emit(as_json, s, text)


def _exit_code(exc: BaseException) -> int:
    names = {cls.__name__ for cls in type(exc).__mro__}
    for name, code in EXIT_CODES:
        if name in names:
            return code
    return 1


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning zoo's errors into one line + exit code."""
    try:
        cli.main(args=argv, prog_name="zoo", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("zoo: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("zoo: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        from zoo.errors import ZooError

        if not isinstance(exc, ZooError):
            if _is_database_error(exc):
                click.echo(f"zoo: error: database error: {_first_line(exc)}", err=True)
                sys.exit(9)
            raise
        click.echo(f"zoo: error: {_first_line(exc)}", err=True)
        sys.exit(_exit_code(exc))
    sys.exit(0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_database_error(exc: BaseException) -> bool:
    mod = sys.modules.get("sqlalchemy.exc")
    return mod is not None and isinstance(exc, mod.SQLAlchemyError)


if __name__ == "__main__":
    main()
