"""Where zoo keeps its state: settings from arguments, environment and a config file.

Precedence, highest first: explicit arguments, environment (``ZOO_DB_URL``,
``ZOO_STORE_URL``, ``ZOO_HOME``), the config file ``$ZOO_HOME/config.toml`` (keys
``db_url`` and ``store_url``), then the embedded default: a SQLite file and a blob folder
under ``ZOO_HOME`` (default ``~/.zoo``).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import InvalidInputError

CONFIG_FILE_NAME = "config.toml"


@dataclass(frozen=True)
class Settings:
    """The settings in effect, and where each came from."""

    home: Path
    db_url: str
    store_url: str
    db_url_from: str
    store_url_from: str
    home_from: str = "default"

    def redacted(self) -> dict[str, str]:
        """Settings safe to print: passwords in URLs are masked. An S3 store adds the
        endpoint it talks to (from the environment, read when the store opens)."""
        out = {
            "home": str(self.home),
            "home_from": self.home_from,
            "db_url": redact_url(self.db_url),
            "db_url_from": self.db_url_from,
            "store_url": redact_url(self.store_url),
            "store_url_from": self.store_url_from,
        }
        if is_s3_url(self.store_url):
            var = _s3_endpoint_var()
            out["s3_endpoint"] = redact_url(os.environ[var]) if var else "AWS"
            # botocore also reads endpoint_url from the AWS config file.
            out["s3_endpoint_from"] = f"${var}" if var else "default (or the AWS config file)"
        # Where derivations run when a command names no --device (read, not probed: torch
        # is not imported to print settings).
        device = os.environ.get("ZOO_DEVICE", "").strip()
        out["device"] = device or (
            "materialize: the GPU when there is one, else the CPU; extract: the CPU"
        )
        out["device_from"] = "$ZOO_DEVICE" if device else "default"
        return out


def is_s3_url(url: str) -> bool:
    """Whether a store URL names S3 (``s3://`` or ``s3a://``)."""
    return url.split("://", 1)[0].lower() in ("s3", "s3a") if "://" in url else False


#: Where an S3-compatible server's address is read from, first set wins.
S3_ENDPOINT_ENV = ("ZOO_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def _s3_endpoint_var() -> str | None:
    return next((var for var in S3_ENDPOINT_ENV if os.environ.get(var)), None)


def s3_endpoint() -> str | None:
    """The S3 endpoint from the environment, or None for AWS itself."""
    var = _s3_endpoint_var()
    return os.environ[var] if var else None


def redact_url(url: str) -> str:
    """Mask the password (and any secret-looking query value) in a URL, also in a mistyped
    one, where an error is most likely to show it: the password runs from the first ``:``
    of the user part to the last ``@`` before the query (an unescaped ``@`` in it is still
    masked), and without ``//`` the user part starts the URL (the scheme is masked too)."""
    head, mark, query = url.partition("?")
    at = head.rfind("@")
    if at != -1:
        start = head.find("//") + 2 if "//" in head[:at] else 0
        colon = head.find(":", start, at)
        if colon != -1:
            head = f"{head[: colon + 1]}***{head[at:]}"
    secret = r"((?:secret|password|token|key|signature|credential)[^=&]*=)[^&]+"
    return head + mark + re.sub(secret, r"\1***", query, flags=re.I)


def _read_config_file(home: Path) -> dict[str, str]:
    path = home / CONFIG_FILE_NAME
    if not path.is_file():
        return {}
    # Imported here: most homes have no config file, and every command reads this first
    # (the parser is 5 ms of a 90 ms `zoo ls`).
    try:  # Python 3.11+
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser as a package (a dependency there)
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Config file {path} is not valid TOML: {exc}.") from exc
    unknown = set(data) - {"db_url", "store_url"}
    if unknown:
        raise InvalidInputError(
            f"Config file {path} has unknown keys {sorted(unknown)}; "
            "only db_url and store_url are read."
        )
    # A relative path in a file kept in the home is the home's: read from another folder,
    # it would name another (empty) registry there.
    return {k: _from_home(path.parent.absolute(), str(v)) for k, v in data.items()}


def _from_home(home: Path, value: str) -> str:
    """``value`` (a store folder or a SQLite URL) with a relative path made the home's."""
    scheme, sep3, rest = value.partition(":///")
    if sep3 and (scheme == "sqlite" or scheme.startswith("sqlite+")):  # any driver's
        file, sep, query = rest.partition("?")
        if file and not file.startswith(("/", "~", ":memory:", "file:")):
            return f"{scheme}:///{home / file}{sep}{query}"
        return value
    if "://" not in value and value and not value.startswith(("/", "~")):
        return str(home / value)
    return value


def _from_cwd(value: str) -> str:
    """``value`` (a store folder or a SQLite URL) with a relative path made the current
    folder's; the folder is asked for only then (it may have been removed)."""
    return value if _from_home(Path("/"), value) == value else _from_home(Path.cwd(), value)


def load_settings(
    *,
    home: str | os.PathLike[str] | None = None,
    db_url: str | None = None,
    store_url: str | None = None,
) -> Settings:
    """Resolve the settings in effect.

    Args:
        home: the zoo home folder; default ``$ZOO_HOME`` or ``~/.zoo``.
        db_url: a SQLAlchemy URL; default ``$ZOO_DB_URL``, the config file, or SQLite in home.
        store_url: a blob store URL or folder; default ``$ZOO_STORE_URL``, the config file,
            or ``home/blobs``.
    """
    # A relative home, database file or store folder is the current folder's as the
    # settings are read, and stays so: a process that changes folder afterwards (a
    # notebook's os.chdir) goes on with the same registry, not half of another one.
    home_path = Path(home or os.environ.get("ZOO_HOME") or Path.home() / ".zoo").expanduser()
    home_path = home_path.absolute()
    home_from = "argument" if home else "$ZOO_HOME" if os.environ.get("ZOO_HOME") else "default"
    file_values = _read_config_file(home_path)

    def pick(explicit: str | None, env: str, key: str, default: str) -> tuple[str, str]:
        if explicit:
            return _from_cwd(explicit), "argument"
        if os.environ.get(env):
            return _from_cwd(os.environ[env]), f"${env}"
        if key in file_values:
            return file_values[key], str(home_path / CONFIG_FILE_NAME)
        return default, "default"

    db, db_from = pick(db_url, "ZOO_DB_URL", "db_url", f"sqlite:///{home_path / 'zoo.db'}")
    store, store_from = pick(store_url, "ZOO_STORE_URL", "store_url", str(home_path / "blobs"))
    return Settings(home_path, db, store, db_from, store_from, home_from)


def timeout_from_env() -> float:
    """The seconds a zoo server's answer may take (``ZOO_TIMEOUT``, default 600), read
    when a client connects, so a program that sets it after ``import zoo`` gets it.

    Raises:
        InvalidInputError: it is not a number of seconds above 0 (0 would make every
            socket non-blocking, and its first read fail).
    """
    text = os.environ.get("ZOO_TIMEOUT", "").strip()
    if not text:
        return 600.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidInputError(
            f"ZOO_TIMEOUT is the seconds a zoo server's answer may take, a number above 0 "
            f"(got {text[:40]!r})."
        )
    return seconds


def endpoint_from_env() -> tuple[str, str | None] | None:
    """(endpoint, token) of the zoo server ``ZOO_ENDPOINT`` names, or None: the registry
    is then the database's (see :func:`zoo.connect`)."""
    endpoint = os.environ.get("ZOO_ENDPOINT", "").strip()
    return (endpoint, os.environ.get("ZOO_TOKEN") or None) if endpoint else None
