"""Who may use the status page: the bind address rule, the access token, and the checks on every request.

Contract:
- `parse_http_address("HOST:PORT", allow_remote)`: a loopback HOST (127.0.0.0/8, ::1, localhost) is always
  accepted; any other HOST only with `allow_remote` (the CLI's `--http-allow-remote`, which prints a warning).
  Anything else is ValueError naming the value (the CLI exits 2).
- `write_token(system_dir)` makes a new random token (32 bytes, URL-safe) at every service start and writes it to
  `system/http-token` with mode 0600 (created owner-only, never readable by others even for an instant);
  `read_token(system_dir)` reads it back (None when absent).
- `check(request, token, loopback_hosts)` decides one request, returning None (allowed) or the refusal:
  every path but the static assets needs the token (`?token=` on a GET; a POST must carry it in the
  `X-Agenthost-Token` header and never in the URL); a POST must also be `application/json` (so a cross-site form
  cannot send it, and a cross-site fetch needs a preflight that is never granted) and, when the browser sends an
  Origin, come from the page's own origin. On a loopback bind the Host header must name a loopback host
  (a DNS-rebinding page cannot reach the service). Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec

__all__ = ["TOKEN_FILE", "Refusal", "RequestFacts", "check", "is_loopback", "parse_http_address", "read_token"]

TOKEN_FILE = "http-token"
TOKEN_HEADER = "X-Agenthost-Token"
PUBLIC_PATHS = frozenset({"/static/status.js", "/static/status.css", "/favicon.ico"})


class RequestFacts(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    target: str  # the request target: path and query
    host: str | None = None  # the Host header
    origin: str | None = None
    content_type: str | None = None
    token_header: str | None = None


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    status: int  # 400, 403 or 405
    reason: str


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def parse_http_address(address: str, allow_remote: bool = False) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http {address!r} is invalid: expected HOST:PORT, e.g. 127.0.0.1:8321")
    if not is_loopback(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"--http {address!r} is invalid: HOST must be an IP address or localhost") from None
        if not allow_remote:
            raise ValueError(
                f"--http {address!r} is not a loopback address: pass --http-allow-remote to bind it anyway "
                "(an ssh port forward to 127.0.0.1 is the safe way to reach the page from elsewhere)"
            )
    return host, int(port)


def write_token(system_dir: Path) -> str:
    token = secrets.token_urlsafe(32)
    path = system_dir / TOKEN_FILE
    temporary = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{token}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return token


def read_token(system_dir: Path) -> str | None:
    try:
        return (system_dir / TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def check(request: RequestFacts, token: str, loopback_only: bool) -> Refusal | None:
    parts = urlsplit(request.target)
    if loopback_only:
        host = (request.host or "").rsplit(":", 1)[0] if not (request.host or "").endswith("]") else request.host
        if not host or not is_loopback(host):
            return Refusal(status=403, reason=f"Host {request.host!r} is not a loopback name")
    if parts.path in PUBLIC_PATHS and request.method == "GET":
        return None
    query_token = parse_qs(parts.query).get("token", [None])[-1]
    if request.method == "GET":
        if not _same(query_token, token):
            return Refusal(status=403, reason="a valid token is required (agenthost url --root ROOT prints the URL)")
        return None
    if request.method != "POST":
        return Refusal(status=405, reason=f"method {request.method} is not allowed")
    if query_token is not None:
        return Refusal(status=400, reason=f"a POST carries its token in the {TOKEN_HEADER} header, not in the URL")
    if not _same(request.token_header, token):
        return Refusal(status=403, reason=f"a valid token is required in the {TOKEN_HEADER} header")
    if (request.content_type or "").split(";")[0].strip().lower() != "application/json":
        return Refusal(status=400, reason="a POST must be application/json")
    if request.origin is not None and urlsplit(request.origin).netloc != (request.host or ""):
        return Refusal(status=403, reason=f"cross-site request from origin {request.origin!r} refused")
    return None
