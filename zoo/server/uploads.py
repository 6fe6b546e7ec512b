"""Receiving an uploaded checkpoint: a multipart/form-data body streamed straight into
the server's staging folder, and the room it needs checked before the first byte.

A web framework's form parsing spools every file part into the system's temporary
folder (often small, or in memory) and the handler then copies it out: a 15 GB
checkpoint took 15 GB there, 15 GB more in the staging folder and 15 GB in the blob
store at the end. Here each file part is written once, where the import reads it, as its
bytes arrive.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from zoo.api.export import decimal_bytes
from zoo.errors import InvalidInputError, NoRoomError

#: The most file parts one upload holds (a checkpoint's shards and side files).
MAX_FILES = 1000
#: The most bytes a form field (not a file) holds: names, labels, origins.
MAX_FIELD_BYTES = 4096
#: Bytes gathered before a write: one write call (in a worker thread) per block.
_BLOCK = 1 << 20


@dataclass
class Upload:
    """What a multipart body held: its form fields, and the names of its files, in the
    order they came, written under the staging folder."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def check_room(size: int, folders: list[Path]) -> None:
    """Refuse, before any byte is received, an upload of ``size`` bytes the server's disks
    cannot hold: one copy on the file system of each of ``folders`` (the staging folder,
    and a local blob store the import writes the same bytes into).

    Raises:
        NoRoomError: a file system among them has less room than its copies take.
    """
    need: dict[int, tuple[int, int]] = {}
    for folder in folders:
        usage = shutil.disk_usage(folder)
        device = folder.stat().st_dev
        copies = need.get(device, (0, usage.free))[0] + size
        need[device] = (copies, usage.free)
    for needed, free in need.values():
        if needed > free:
            raise NoRoomError(
                f"This upload needs {decimal_bytes(needed)} of the server's disk while it is "
                f"imported, and the server has {decimal_bytes(free)} free.",
                needed=needed,
                free=free,
            )


async def receive(request, folder: Path, check_name, *, fields: tuple[str, ...]) -> Upload:
    """Stream ``request``'s multipart body into ``folder``: each file part (form name
    ``files``) to the path its filename names, checked by ``check_name`` and refused when
    it comes twice; each form field among ``fields`` kept as text. Anything else is
    refused. What was written stays for the caller, which removes ``folder``.

    Raises:
        InvalidInputError: a body that is not multipart/form-data, a part zoo does not
            take, a name refused, a file twice, more than MAX_FILES files, a body that
            ends before its closing boundary or a client gone before its end.
    """
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidInputError("An upload is a multipart/form-data body (one part per file).")
    got = Upload()
    part = _Part()
    events: list[tuple[str, object]] = []

    def header_field(data: bytes, start: int, end: int) -> None:
        part.header_name += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        part.header_value += data[start:end]

    def header_end() -> None:
        if part.header_name.lower() == b"content-disposition":
            part.disposition = part.header_value
        part.header_name, part.header_value = b"", b""

    def begin() -> None:
        part.disposition = b""

    callbacks = {
        "on_part_begin": begin,
        "on_header_field": header_field,
        "on_header_value": header_value,
        "on_header_end": header_end,
        "on_headers_finished": lambda: events.append(("headers", part.disposition)),
        "on_part_data": lambda data, start, end: events.append(("data", data[start:end])),
        "on_part_end": lambda: events.append(("end", None)),
        "on_end": lambda: events.append(("closed", None)),
    }
    parser = MultipartParser(boundary, callbacks)
    writer = _Writer(folder, check_name, got, fields)
    try:
        async for chunk in _body(request):
            try:
                parser.write(chunk)
            except ValueError as exc:  # python-multipart's malformed-body errors
                raise InvalidInputError(
                    f"The upload's multipart body is malformed: {exc}"
                ) from None
            for what, value in events:
                await writer.on(what, value)
            events.clear()
        try:
            parser.finalize()
        except ValueError as exc:
            raise InvalidInputError(f"The upload's multipart body is malformed: {exc}") from None
        await writer.flush()
    finally:
        writer.close()
    if not got.files:
        raise InvalidInputError("The upload holds no file (send each as a part named files).")
    if not writer.closed:
        # The parser takes a body that stops short: its last file would be kept cut.
        raise InvalidInputError(
            "The upload's multipart body ends before its closing boundary: a file in it "
            "is cut short."
        )
    return got


async def _body(request):
    """The request's body, chunk by chunk; a client gone before its end is told as a
    refused upload, not as the server's own failure (logged with its trace)."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise InvalidInputError("The upload's client went away before its body ended.") from None


@dataclass
class _Part:
    header_name: bytes = b""
    header_value: bytes = b""
    disposition: bytes = b""


class _Writer:
    """Takes the parser's events in order: opens each file part's file, writes its bytes a
    block at a time, keeps each field's text."""

    def __init__(self, folder: Path, check_name, got: Upload, fields: tuple[str, ...]):
        self.folder, self.check_name, self.got, self.fields = folder, check_name, got, fields
        self.out = None
        self.field: str | None = None
        self.buffer = bytearray()
        self.closed = False  # the body's closing boundary came

    async def on(self, what: str, value) -> None:
        if what == "headers":
            await self._start(value)
        elif what == "data":
            self.buffer += value
            if self.field is not None and len(self.buffer) > MAX_FIELD_BYTES:
                raise InvalidInputError(
                    f"The form field {self.field!r} holds more than {MAX_FIELD_BYTES} bytes."
                )
            if self.out is not None and len(self.buffer) >= _BLOCK:
                await self.flush()
        elif what == "end":
            if self.out is not None:
                await self.flush()
                self.out.close()
                self.out = None
            elif self.field is not None:
                try:
                    self.got.fields[self.field] = self.buffer.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInputError(
                        f"The form field {self.field!r} is not UTF-8 text."
                    ) from None
                self.buffer.clear()
                self.field = None
        elif what == "closed":
            self.closed = True

    async def _start(self, disposition: bytes) -> None:
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            if name not in self.fields or name in self.got.fields:
                raise InvalidInputError(
                    f"The upload's form field {name[:40]!r} is not one it takes "
                    f"({', '.join(self.fields)}, and files), or comes twice."
                )
            self.field = name
            return
        if name != "files":
            raise InvalidInputError(f"A file goes in a part named files, not {name[:40]!r}.")
        filename = self.check_name(options[b"filename"].decode("utf-8", "replace"))
        if filename in self.got.files:
            raise InvalidInputError(f"{filename} is uploaded twice.")
        if len(self.got.files) >= MAX_FILES:
            raise InvalidInputError(f"An upload holds at most {MAX_FILES} files.")
        self.got.files.append(filename)
        path = self.folder / filename
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # the name's parts are checked
            self.out = open(path, "xb")  # noqa: SIM115 - closed at the part's end or on error
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            # One name both a file and a folder (a.json, then a.json/b.json; or the other way).
            raise InvalidInputError(
                f"{filename} is refused: the upload holds a name in its path both as a file "
                "and as a folder."
            ) from None

    async def flush(self) -> None:
        if self.out is not None and self.buffer:
            data, self.buffer = bytes(self.buffer), bytearray()
            await asyncio.to_thread(self.out.write, data)

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
