"""A small HTTP proxy in front of the real SeaweedFS, for faults no healthy server shows:

- ``drop_if_none_match``: forwards PUTs without their ``If-None-Match`` header (re-signed with
  SigV4, as a gateway that does not know the header would send them): a store without
  conditional writes;
- ``lose_response(method, pattern)``: forwards the request, then closes the connection without an
  answer (the request took effect, its response was lost; the client retries);
- ``hold(method, pattern)``: keeps a matching request until the test releases it (a slow step at
  an exact point).

Everything else is passed through unchanged (same bytes, same signature).
"""
from __future__ import annotations

import http.client
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}


@dataclass
class _Rule:
    method: str
    pattern: re.Pattern
    times: int                      # how many matching requests it applies to
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    hits: int = 0

    def take(self, method: str, path: str) -> bool:
        if method == self.method and self.pattern.search(urllib.parse.unquote(path)) and self.hits < self.times:
            self.hits += 1
            return True
        return False


class S3Proxy:
    def __init__(self, upstream: str, access_key: str, secret_key: str, region: str = "us-east-1"):
        u = urllib.parse.urlsplit(upstream)
        self.up_host, self.up_port = u.hostname, u.port or 80
        self.creds = Credentials(access_key, secret_key)
        self.region = region
        self.drop_if_none_match = False
        self.lost: list[_Rule] = []
        self.holds: list[_Rule] = []
        self.seen: list[tuple[str, str]] = []   # (method, path) of every request
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "S3Proxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for r in self.holds:
            r.release.set()
        self.server.shutdown()
        self.server.server_close()

    def lose_response(self, method: str, pattern: str, times: int = 1) -> _Rule:
        r = _Rule(method, re.compile(pattern), times)
        self.lost.append(r)
        return r

    def hold(self, method: str, pattern: str, times: int = 1) -> _Rule:
        r = _Rule(method, re.compile(pattern), times)
        self.holds.append(r)
        return r

    def count(self, method: str, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(1 for m, p in self.seen if m == method and rx.search(urllib.parse.unquote(p)))

    def _match(self, rules: list[_Rule], method: str, path: str) -> _Rule | None:
        with self.lock:
            return next((r for r in rules if r.take(method, path)), None)

    def _resign(self, method: str, path: str, headers: dict, body: bytes) -> dict:
        skip = {"authorization", "x-amz-date", "x-amz-content-sha256", "if-none-match", "host",
                "content-length", "user-agent", *_HOP}
        req = AWSRequest(method=method, url=f"http://{headers['Host']}{path}", data=body,
                         headers={k: v for k, v in headers.items() if k.lower() not in skip})
        S3SigV4Auth(self.creds, "s3", self.region).add_auth(req)
        out = dict(req.headers.items())
        out["Host"] = headers["Host"]
        out["Content-Length"] = str(len(body))
        return out

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                method, path = self.command, self.path
                with proxy.lock:
                    proxy.seen.append((method, path))
                assert "chunked" not in (self.headers.get("Transfer-Encoding") or ""), "chunked bodies unsupported"
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                hold = proxy._match(proxy.holds, method, path)
                if hold is not None:
                    hold.arrived.set()
                    hold.release.wait(120)
                if proxy.drop_if_none_match and any(k.lower() == "if-none-match" for k in headers):
                    headers = proxy._resign(method, path, headers, body)
                conn = http.client.HTTPConnection(proxy.up_host, proxy.up_port, timeout=120)
                try:
                    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                    for k, v in headers.items():
                        conn.putheader(k, v)
                    conn.endheaders(body if body else None)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if proxy._match(proxy.lost, method, path) is not None:
                    self.close_connection = True  # the request took effect; its answer is lost
                    return
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and (k.lower() != "content-length" or method == "HEAD"):
                        self.send_header(k, v)
                if method != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
