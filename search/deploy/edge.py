"""``python -m search.deploy.edge --bundle DIR [--host 127.0.0.1] [--port P]``: the reference edge server.

asyncio, one task per client; each request (see :mod:`search.deploy.protocol`) is decoded, run through
``edge.onnx`` in a worker thread (the event loop keeps serving other clients) and answered with the detections.
A bad frame gets an error reply and one log line and the server goes on: a payload that does not decode
(truncated, bit-flipped, wrong version, garbage body) is answered and the connection kept; a frame above
``max_frame_bytes`` (the bundle's, or ``--max-frame``) is refused from its header, before anything is allocated,
and a frame without the magic is refused - both close that connection, whose stream cannot be followed any more.
A client that disconnects mid-frame only ends its own task.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from models.codec import PayloadError
from search.deploy.protocol import ERROR, OK, REQUEST, REQUEST_MAGIC, detections_body, reply
from search.deploy.runtime import Bundle, BundleError

log = logging.getLogger("search.deploy.edge")


class EdgeServer:
    def __init__(self, bundle: Bundle, max_frame: int | None = None, workers: int = 1) -> None:
        self.bundle = bundle
        self.max_frame = int(max_frame or bundle.spec.get("max_frame_bytes", 16 << 20))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edge")
        self.served = 0
        self.errors = 0
        self.clients = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.clients += 1
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    head = await reader.readexactly(REQUEST.size)
                except asyncio.IncompleteReadError as e:
                    if e.partial:
                        log.warning("edge: %s disconnected mid-header (%d of %d bytes)", who, len(e.partial),
                                    REQUEST.size)
                    return
                magic, rid, n = REQUEST.unpack(head)
                if magic != REQUEST_MAGIC:
                    await self._fail(writer, who, rid, f"bad frame magic {magic!r}, expected {REQUEST_MAGIC!r}; "
                                                       f"closing the connection")
                    return
                if n > self.max_frame:
                    await self._fail(writer, who, rid, f"frame of {n} bytes exceeds the limit {self.max_frame}; "
                                                       f"closing the connection")
                    return
                try:
                    payload = await reader.readexactly(n)
                except asyncio.IncompleteReadError as e:
                    log.warning("edge: %s request %d: disconnected mid-frame (%d of %d bytes)", who, rid,
                                len(e.partial), n)
                    return
                try:
                    dets = await loop.run_in_executor(self.pool, self.bundle.edge_detections, payload)
                except (PayloadError, BundleError) as e:
                    await self._fail(writer, who, rid, str(e))
                    continue
                self.served += 1  # counted before the reply leaves, so a client that has its reply sees the count
                writer.write(reply(rid, OK, detections_body(dets)))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.clients -= 1
            writer.close()

    async def _fail(self, writer: asyncio.StreamWriter, who: str, rid: int, msg: str) -> None:
        self.errors += 1
        log.warning("edge: %s request %d: %s", who, rid, msg)
        writer.write(reply(rid, ERROR, msg.encode()[:4096]))
        try:
            await writer.drain()
        except ConnectionError:
            pass

    async def serve(self, host: str, port: int, ready=None) -> None:
        server = await asyncio.start_server(self.handle, host, port)
        sock = server.sockets[0].getsockname()
        log.warning("edge: serving %s (%s, j=%d) on %s:%d", self.bundle.folder, self.bundle.kind,
                    self.bundle.spec["j"], sock[0], sock[1])
        if ready is not None:
            ready(sock[1])
        async with server:
            await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m search.deploy.edge", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, help="studies/<study>/deploy/<trial>/")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5555)
    ap.add_argument("--max-frame", type=int, default=None, help="bytes (default: the bundle's max_frame_bytes)")
    ap.add_argument("--workers", type=int, default=1, help="inference threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        server = EdgeServer(Bundle(args.bundle, threads=0), args.max_frame, args.workers)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(server.serve(args.host, args.port, ready=lambda p: print(f"listening on {p}", flush=True)))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"error: --host {args.host} --port {args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
