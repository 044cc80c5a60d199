"""A tiny raw HTTP/2 client for hostile-input tests: the connection preface
and frames as bytes on a plain socket, HPACK written by hand (literal
headers, never indexed, no Huffman) so a test can send what no gRPC library
would: bad frame sizes, broken HPACK, DATA on stream 0, odd grpc-timeout
values, oversized or malformed metadata.

Reading decodes just enough HPACK (static + dynamic table, integers,
literals) to find `:status`, `grpc-status`, `grpc-message` and
`sluice-reason`; gRPC core never Huffman-codes those (it Huffman-codes only
`-bin` values), so a Huffman string is kept as the marker b"<huffman>".
"""

import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# RFC 7541 Appendix A.
STATIC_TABLE = [
    (b":authority", b""), (b":method", b"GET"), (b":method", b"POST"), (b":path", b"/"),
    (b":path", b"/index.html"), (b":scheme", b"http"), (b":scheme", b"https"),
    (b":status", b"200"), (b":status", b"204"), (b":status", b"206"), (b":status", b"304"),
    (b":status", b"400"), (b":status", b"404"), (b":status", b"500"),
    (b"accept-charset", b""), (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""), (b"accept-ranges", b""), (b"accept", b""),
    (b"access-control-allow-origin", b""), (b"age", b""), (b"allow", b""),
    (b"authorization", b""), (b"cache-control", b""), (b"content-disposition", b""),
    (b"content-encoding", b""), (b"content-language", b""), (b"content-length", b""),
    (b"content-location", b""), (b"content-range", b""), (b"content-type", b""),
    (b"cookie", b""), (b"date", b""), (b"etag", b""), (b"expect", b""), (b"expires", b""),
    (b"from", b""), (b"host", b""), (b"if-match", b""), (b"if-modified-since", b""),
    (b"if-none-match", b""), (b"if-range", b""), (b"if-unmodified-since", b""),
    (b"last-modified", b""), (b"link", b""), (b"location", b""), (b"max-forwards", b""),
    (b"proxy-authenticate", b""), (b"proxy-authorization", b""), (b"range", b""),
    (b"referer", b""), (b"refresh", b""), (b"retry-after", b""), (b"server", b""),
    (b"set-cookie", b""), (b"strict-transport-security", b""), (b"transfer-encoding", b""),
    (b"user-agent", b""), (b"vary", b""), (b"via", b""), (b"www-authenticate", b""),
]


def frame(ftype, flags, stream_id, payload=b"", length=None):
    """One frame; `length` lets a test lie about the payload's size."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id & 0x7FFFFFFF) + payload


def encode_int(value, prefix_bits, first_byte_flags=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_str(s):
    return encode_int(len(s), 7) + s


def encode_headers(headers):
    """Literal header fields without indexing, new names, no Huffman."""
    out = bytearray()
    for name, value in headers:
        name = name.encode() if isinstance(name, str) else name
        value = value.encode() if isinstance(value, str) else value
        out += b"\x00" + encode_str(name) + encode_str(value)
    return bytes(out)


def grpc_frame(message, compressed=False):
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(message)) + message


def request_headers(path, authority="sluice", extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", authority), ("content-type", "application/grpc"),
            ("te", "trailers")] + list(extra)


class HpackDecoder:
    def __init__(self):
        self.dynamic = []  # newest first
        self.size = 0
        self.max_size = 4096

    def _int(self, data, pos, prefix_bits):
        limit = (1 << prefix_bits) - 1
        value = data[pos] & limit
        pos += 1
        if value < limit:
            return value, pos
        shift = 0
        while True:
            b = data[pos]
            pos += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, pos

    def _str(self, data, pos):
        huffman = data[pos] & 0x80
        n, pos = self._int(data, pos, 7)
        s = data[pos:pos + n]
        return (b"<huffman>" if huffman else bytes(s)), pos + n

    def _get(self, index):
        if index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        return self.dynamic[index - len(STATIC_TABLE) - 1]

    def _add(self, name, value):
        self.dynamic.insert(0, (name, value))
        self.size += len(name) + len(value) + 32
        self._evict()

    def _evict(self):
        while self.size > self.max_size and self.dynamic:
            n, v = self.dynamic.pop()
            self.size -= len(n) + len(v) + 32

    def decode(self, data):
        headers, pos = [], 0
        while pos < len(data):
            b = data[pos]
            if b & 0x80:  # indexed
                index, pos = self._int(data, pos, 7)
                headers.append(self._get(index))
            elif b & 0xC0 == 0x40:  # literal, incremental indexing
                index, pos = self._int(data, pos, 6)
                name = self._get(index)[0] if index else None
                if name is None:
                    name, pos = self._str(data, pos)
                value, pos = self._str(data, pos)
                self._add(name, value)
                headers.append((name, value))
            elif b & 0xE0 == 0x20:  # table size update
                self.max_size, pos = self._int(data, pos, 5)
                self._evict()
            else:  # literal without indexing / never indexed
                index, pos = self._int(data, pos, 4)
                name = self._get(index)[0] if index else None
                if name is None:
                    name, pos = self._str(data, pos)
                value, pos = self._str(data, pos)
                headers.append((name, value))
        return [(n.decode(errors="replace"), v.decode(errors="replace")) for n, v in headers]


class Result:
    """What the server did with one stream (or with the connection)."""

    def __init__(self):
        self.headers = []      # initial response headers
        self.trailers = []     # trailers (or a trailers-only response)
        self.data = b""        # DATA payload bytes
        self.rst = None        # RST_STREAM error code
        self.goaway = None     # (last_stream_id, error_code)
        self.closed = False    # the server closed the connection
        self.ended = False     # END_STREAM seen

    def get(self, key):
        for k, v in self.trailers + self.headers:
            if k == key:
                return v
        return None

    @property
    def grpc_status(self):
        v = self.get("grpc-status")
        return int(v) if v is not None else None

    def messages(self):
        out, pos = [], 0
        while pos + 5 <= len(self.data):
            n = struct.unpack(">I", self.data[pos + 1:pos + 5])[0]
            out.append(self.data[pos + 5:pos + 5 + n])
            pos += 5 + n
        return out

    def __repr__(self):
        return (f"Result(status={self.grpc_status}, message={self.get('grpc-message')!r}, "
                f"reason={self.get('sluice-reason')!r}, rst={self.rst}, goaway={self.goaway}, "
                f"closed={self.closed}, ended={self.ended}, data={len(self.data)}B)")


class H2Conn:
    def __init__(self, address, settings=(), timeout=10.0, handshake=True, source=None):
        """`source`: the local address to connect from (e.g. "127.0.0.2")."""
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.timeout = timeout
        self.buf = b""
        self.decoder = HpackDecoder()
        self.next_stream = 1
        self.results = {}
        self.goaway = None
        self.closed = False
        self.seen = []  # (type, flags, stream id) of every frame read
        self.server_settings = None  # {id: value} of the server's SETTINGS
        if handshake:
            payload = b"".join(struct.pack(">HI", k, v) for k, v in settings)
            self.send(PREFACE + frame(SETTINGS, 0, 0, payload))

    def send(self, data):
        """Sends bytes; False (and `closed`) if the server has hung up."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:  # EPIPE, ECONNRESET: the server closed the connection
            self.closed = True
            return False

    def new_stream(self):
        sid = self.next_stream
        self.next_stream += 2
        self.results[sid] = Result()
        return sid

    def start_call(self, path, message=None, extra_headers=(), end=True, raw_headers=None):
        """HEADERS (+ one DATA with a gRPC message) on a new stream."""
        sid = self.new_stream()
        block = raw_headers if raw_headers is not None else \
            encode_headers(request_headers(path, extra=extra_headers))
        flags = END_HEADERS | (END_STREAM if message is None and end else 0)
        out = frame(HEADERS, flags, sid, block)
        if message is not None:
            out += frame(DATA, END_STREAM if end else 0, sid, grpc_frame(message))
        self.send(out)
        return sid

    def _read_frame(self, deadline):
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete frame from the server")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        ftype, flags = self.buf[3], self.buf[4]
        sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload = self.buf[9:9 + n]
        self.buf = self.buf[9 + n:]
        return ftype, flags, sid, payload

    def pump(self, until, timeout=None):
        """Reads and handles frames until `until()` holds, the connection
        closes, or `timeout` passes (then returns False)."""
        try:
            self._pump(until, timeout)
        except (TimeoutError, socket.timeout):
            return False
        return True

    def _pump(self, until, timeout):
        deadline = time.monotonic() + (timeout or self.timeout)
        while not until():
            if self.closed:
                for r in self.results.values():
                    r.closed = True
                return
            f = self._read_frame(deadline)
            if f is None:
                for r in self.results.values():
                    r.closed = True
                return
            ftype, flags, sid, payload = f
            self.seen.append((ftype, flags, sid))
            r = self.results.get(sid)
            if ftype == SETTINGS and not flags & ACK:
                self.server_settings = dict(struct.unpack(">HI", payload[i:i + 6])
                                            for i in range(0, len(payload) - 5, 6))
                self.send(frame(SETTINGS, ACK, 0))
            elif ftype == PING and not flags & ACK:
                self.send(frame(PING, ACK, 0, payload))
            elif ftype == GOAWAY:
                last, code = struct.unpack(">II", payload[:8])
                self.goaway = (last & 0x7FFFFFFF, code)
                for r2 in self.results.values():
                    r2.goaway = self.goaway
            elif ftype in (HEADERS, CONTINUATION):
                block = payload
                if ftype == HEADERS and flags & PADDED:
                    block = block[1:len(block) - payload[0]]
                if ftype == HEADERS and flags & PRIORITY_FLAG:
                    block = block[5:]
                hs = self.decoder.decode(block)
                if r is not None:
                    if r.headers or flags & END_STREAM:
                        r.trailers += hs
                    else:
                        r.headers += hs
                    if flags & END_STREAM:
                        r.ended = True
            elif ftype == DATA:
                if r is not None:
                    r.data += payload
                    if flags & END_STREAM:
                        r.ended = True
                if payload:  # keep the windows open
                    inc = struct.pack(">I", len(payload))
                    self.send(frame(WINDOW_UPDATE, 0, 0, inc) +
                              (frame(WINDOW_UPDATE, 0, sid, inc) if r and not r.ended else b""))
            elif ftype == RST_STREAM and r is not None:
                r.rst = struct.unpack(">I", payload[:4])[0]

    def settle(self, timeout=None):
        """Waits for the server's SETTINGS (acknowledged by pump) and the ACK
        of ours, so limits like MAX_CONCURRENT_STREAMS are in force."""
        return self.pump(lambda: self.server_settings is not None and
                         any(t == SETTINGS and f & ACK for t, f, _ in self.seen),
                         timeout=timeout)

    def wait_stream(self, sid, timeout=None):
        r = self.results[sid]
        self.pump(lambda: r.ended or r.rst is not None or r.goaway is not None, timeout=timeout)
        return r

    def wait_closed_or_goaway(self, timeout=None):
        self.pump(lambda: self.goaway is not None, timeout=timeout)
        return self.goaway, self.closed

    def reset(self):
        """Closes with SO_LINGER 0: the peer sees a TCP RST."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()

    def close(self):
        self.sock.close()
