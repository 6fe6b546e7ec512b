"""A reverse proxy that serves a zoo server under a path prefix, as an organization's
front end does (``https://tools.internal/zoo/`` for the server's ``/``): asyncio on one
thread, one request per connection.

``strip=True`` forwards ``/zoo/api/x`` as ``/api/x`` (nginx's ``proxy_pass
http://backend/;`` in a ``location /zoo/``, Traefik's StripPrefix); ``strip=False`` forwards
the path whole. A path outside the prefix is answered 404 by the proxy itself, as a front
end serving other tools there would. ``paths`` records the path of every request that
reached the proxy, as the client sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from zooserver import free_port


class PathProxy:
    def __init__(self, backend_port: int, prefix: str = "/zoo", *, strip: bool = True) -> None:
        self.backend_port, self.prefix, self.strip = backend_port, prefix, strip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{prefix}"
        self.paths: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> PathProxy:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop
        )
        self._server = started.result(10)
        return self

    def __exit__(self, *exc) -> None:
        async def close():
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        line, _, rest = head.partition(b"\r\n")
        method, target, version = line.split(b" ", 2)
        path = target.decode("latin-1")
        self.paths.append(path)
        inside = path == self.prefix or path.startswith((self.prefix + "/", self.prefix + "?"))
        if not inside:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n")
            writer.write(b"\r\nnot found")
            await writer.drain()
            writer.close()
            return
        if self.strip:
            path = path[len(self.prefix) :]
            path = path if path.startswith("/") else "/" + path
        # One request per connection: the next one on a kept-alive connection would pass
        # unread by this proxy.
        fields = [f for f in rest.split(b"\r\n") if f and not f.lower().startswith(b"connection:")]
        fields.append(b"Connection: close")
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        up_writer.write(b" ".join((method, path.encode("latin-1"), version)) + b"\r\n")
        up_writer.write(b"\r\n".join(fields) + b"\r\n\r\n")
        await up_writer.drain()

        async def pipe(src, dst):
            try:
                while block := await src.read(1 << 16):
                    dst.write(block)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                if dst.can_write_eof():
                    with contextlib.suppress(OSError):
                        dst.write_eof()

        sending = asyncio.ensure_future(pipe(reader, up_writer))
        await pipe(up_reader, writer)  # the answer, to its end: the server closes after it
        sending.cancel()
        up_writer.close()
        writer.close()
