"""``python -m search.deploy.edge --bundle DIR [--host 127.0.0.1] [--port P]``: the reference edge server.

asyncio, one task per client; each request (see :mod:`search.deploy.protocol`) is decoded, run through
``edge.onnx`` in a worker thread (the event loop keeps serving other clients) and answered with the detections.
A bad frame gets an error reply and one log line and the server goes on: a payload that does not decode
(truncated, bit-flipped, wrong version, garbage body) is answered and the connection kept; a frame above
``max_frame_bytes`` (the bundle's, or ``--max-frame``) is refused from its header, before anything is allocated,
and a frame without the magic is refused - both close that connection, whose stream cannot be followed any more.
A client that disconnects mid-frame only ends its own task. Bounded so that idle sockets cannot lock new clients
out: a connection that sends nothing for ``idle_timeout_s`` (mid-frame too) is closed, and a client beyond
``max_clients`` open connections gets an error reply and is closed at once (both from the bundle's
``interface.json``, ``deploy.idle_timeout_s`` / ``deploy.max_clients``, or the command line).
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


IDLE_TIMEOUT_S, MAX_CLIENTS = 60.0, 64  # for a bundle written before the limits were in interface.json


class EdgeServer:
    def __init__(self, bundle: Bundle, max_frame: int | None = None, workers: int = 1,
                 idle_timeout_s: float | None = None, max_clients: int | None = None) -> None:
        self.bundle = bundle
        self.max_frame = int(max_frame or bundle.spec.get("max_frame_bytes", 16 << 20))
        self.idle_timeout_s = float(idle_timeout_s or bundle.spec.get("idle_timeout_s", IDLE_TIMEOUT_S))
        self.max_clients = int(max_clients or bundle.spec.get("max_clients", MAX_CLIENTS))
        self.refused = 0
        self.timed_out = 0
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
            if self.clients > self.max_clients:
                self.refused += 1
                await self._fail(writer, who, 0, f"{self.max_clients} clients are connected (the limit); closing")
                return
            while True:
                try:
                    head = await self._read(reader, REQUEST.size)
                except TimeoutError:
                    self.timed_out += 1
                    log.warning("edge: %s idle for %g s; closing the connection", who, self.idle_timeout_s)
                    return
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
                    payload = await self._read(reader, n)
                except TimeoutError:
                    self.timed_out += 1
                    log.warning("edge: %s request %d: idle for %g s mid-frame; closing the connection", who, rid,
                                self.idle_timeout_s)
                    return
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

    async def _read(self, reader: asyncio.StreamReader, n: int) -> bytes:
        """``n`` bytes, or TimeoutError when none arrive for ``idle_timeout_s`` (a slow sender that keeps sending
        is not cut off: the clock restarts with each chunk)."""
        buf = bytearray()
        while len(buf) < n:
            chunk = await asyncio.wait_for(reader.read(n - len(buf)), self.idle_timeout_s)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), n)
            buf += chunk
        return bytes(buf)

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
    ap.add_argument("--idle-timeout", type=float, default=None,
                    help="seconds a connection may send nothing before it is closed (default: the bundle's)")
    ap.add_argument("--max-clients", type=int, default=None,
                    help="open connections served at once; more are refused (default: the bundle's)")
    args = ap.parse_args(argv)
    from search.extras import missing

    if missing("deploy"):
        print(f"error: the reference runtime needs the 'deploy' extra ({', '.join(missing('deploy'))} not "
              f"installed): pip install -e '.[deploy]'", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        if (args.idle_timeout is not None and args.idle_timeout <= 0) or (args.max_clients is not None
                                                                             and args.max_clients < 1):
            raise BundleError(f"--idle-timeout {args.idle_timeout} must be > 0 and --max-clients "
                              f"{args.max_clients} >= 1")
        server = EdgeServer(Bundle(args.bundle, threads=0), args.max_frame, args.workers, args.idle_timeout,
                            args.max_clients)
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
