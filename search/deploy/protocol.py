"""The reference runtime's wire format: length-prefixed frames around the self-describing payload.

Request (node -> edge)::

    magic b"SPQ1" | request id u32 | length u32 | payload (models.codec frame: 24-byte header + body)

Reply (edge -> node)::

    magic b"SPA1" | request id u32 | status u8 | length u32 | body

All integers big-endian (network order). ``status`` 0: the body is the detections as float32 little-endian rows
(x1, y1, x2, y2, score, class) in input pixels; 1: the body is a one-line UTF-8 error message. The edge refuses a
request whose length is above its limit before reading it (and closes that connection, whose stream it can no
longer follow), as it does for a frame without the magic.
"""

from __future__ import annotations

import socket
import struct

import numpy as np

REQUEST = struct.Struct(">4sII")
REPLY = struct.Struct(">4sIBI")
REQUEST_MAGIC, REPLY_MAGIC = b"SPQ1", b"SPA1"
OK, ERROR = 0, 1


class ProtocolError(ValueError):
    """A frame that breaks the protocol; one line."""


def request(rid: int, payload: bytes) -> bytes:
    return REQUEST.pack(REQUEST_MAGIC, rid, len(payload)) + payload


def reply(rid: int, status: int, body: bytes) -> bytes:
    return REPLY.pack(REPLY_MAGIC, rid, status, len(body)) + body


def detections_body(dets: np.ndarray) -> bytes:
    return np.ascontiguousarray(dets, dtype="<f4").reshape(-1, 6).tobytes()


def parse_detections(body: bytes) -> np.ndarray:
    if len(body) % 24:
        raise ProtocolError(f"detections body of {len(body)} bytes is not a whole number of 24-byte rows")
    return np.frombuffer(body, dtype="<f4").reshape(-1, 6).copy()


class Client:
    """A blocking connection to an edge server: ``ask(payload)`` -> (status, body), replies matched by id."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.next_id = 0

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ProtocolError(f"edge closed the connection after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_reply(self) -> tuple[int, int, bytes]:
        magic, rid, status, n = REPLY.unpack(self._read(REPLY.size))
        if magic != REPLY_MAGIC:
            raise ProtocolError(f"reply magic {magic!r}, expected {REPLY_MAGIC!r}")
        return rid, status, self._read(n)

    def ask(self, payload: bytes) -> tuple[int, bytes]:
        rid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        self.send_raw(request(rid, payload))
        got, status, body = self.read_reply()
        if got != rid:
            raise ProtocolError(f"reply to request {got}, expected {rid}")
        return status, body

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
