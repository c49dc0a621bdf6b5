"""Who may ask what, checked at the door (an ASGI middleware in front of Gradio's routes).

- The face's access rule: everyone, or only the addresses and networks the operator lists (e.g. an exhibition
  screen's own browser); every other client then gets 403 except on the public routes, /take/<file> (take-home
  downloads) and /health/* (monitoring).
- Every face: a request body larger than the events ever need is refused before it is read, and one client address
  may have only so many jobs queued or running, so that fire-and-forget joins cannot fill the queue.

Clients are told apart by their address as the server sees it, which a client cannot mint the way it can mint
Gradio session hashes. uvicorn replaces that address with the X-Forwarded-For one only for a request from a proxy
the operator names (AppConfig.trusted_proxies, FP8DEMO_TRUSTED_PROXIES; none by default: server.launch sets
uvicorn's list), so no other process, local or not, can pass itself off as another client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import SetupError

log = logging.getLogger(__name__)

PUBLIC_PREFIXES = ("/take/", "/health/")  # what every client may reach, whatever the access rule
UPLOAD_SUFFIX = "/upload"  # multipart uploads: bounded by Gradio's own max_file_size instead
JOIN_SUFFIX = "/queue/join"
BUSY = "Busy: you already have {n} pictures on the way from this address; wait for one of them, then try again."


def client_address(request) -> str:
    """The client's address (a gr.Request or a Starlette request); "local" for calls with no HTTP client."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "local"


def networks(entries: tuple[str, ...], setting: str) -> tuple:
    """`entries` (addresses or networks) as ip_network objects; a bad one is a SetupError naming `setting`."""
    found = []
    for entry in entries:
        try:
            found.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as error:
            raise SetupError(f"{setting}: {entry!r} is not an IP address or network "
                             "(e.g. 192.168.1.20 or 192.168.1.0/24).") from error
    return tuple(found)


@dataclass(frozen=True)
class AccessRule:
    """Who may use a face's page, its events and its files: everyone, or with `listed_only` exactly the addresses
    and networks in `clients` (loopback is no exception: 127.0.0.7 is as foreign as a LAN address unless listed);
    every other client gets `refusal` (403) everywhere but on the public routes. `setting` names where the clients
    came from, for the message about a bad entry."""

    listed_only: bool = False
    clients: tuple[str, ...] = ()
    refusal: str = "This page is served to its own screen only."
    setting: str = "clients"
    _networks: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):  # parsed once; a bad entry fails at start-up
        object.__setattr__(self, "_networks", networks(self.clients, self.setting))

    def allows(self, host: str) -> bool:
        """May this address use the page and its events?"""
        if not self.listed_only:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # "local" (no client) is an in-process call, never an HTTP request
        # a dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d: the same client
        mapped = getattr(address, "ipv4_mapped", None)
        return any(a in net for a in (address, mapped) if a is not None for net in self._networks)

    def names_loopback(self) -> bool:
        """Does the list let in a browser on this machine (127.0.0.1 or ::1)?"""
        return self.allows("127.0.0.1") or self.allows("::1")


@dataclass(frozen=True)
class AccessPolicy:
    """What the door enforces: the face's access rule and the bounds every face shares."""

    rule: AccessRule = AccessRule()
    jobs_per_client: int = 2
    max_body_bytes: int = 256 * 1024
    public: tuple[str, ...] = PUBLIC_PREFIXES  # path prefixes every client may reach, whatever the rule


def queued_jobs(blocks) -> Callable[[str], int]:
    """Counts one address's queued and running events in the app's Gradio queue (the queue's own record, so that
    events it dropped for a departed client are no longer counted)."""

    def count(host: str) -> int:
        queue = getattr(blocks, "_queue", None)
        events = list(getattr(queue, "event_ids_to_events", {}).values())
        return sum(1 for event in events if client_address(getattr(event, "request", None)) == host)

    return count


class Guard:
    """ASGI middleware; `pending(host)` counts a client's jobs (None: no per-client bound); `refused(reason)` hears
    of every refusal ("access", "too-large", "busy"), for the metrics."""

    def __init__(self, app, policy: AccessPolicy, pending: Callable[[str], int] | None = None,
                 refused: Callable[[str], None] | None = None):
        self.app, self.policy, self.pending = app, policy, pending
        self.refused = refused or (lambda reason: None)
        self._join_lock: asyncio.Lock | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = (scope.get("client") or ("local", 0))[0]
        path = scope.get("path", "")
        rule = self.policy.rule
        if not rule.allows(host) and not path.startswith(self.policy.public):
            log.info("refused %s %s from %s: not an allowed client", scope.get("method", "WS"), path[:80], host)
            self.refused("access")
            return await _refuse(scope, send, 403, rule.refusal)
        if scope["type"] == "websocket" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        if not path.endswith(UPLOAD_SUFFIX):
            length = _content_length(scope)
            if length is None or length > self.policy.max_body_bytes:
                self.refused("too-large")
                return await _refuse(scope, send, 413 if length else 411,
                                     f"Requests are limited to {self.policy.max_body_bytes // 1024} KiB; "
                                     "prompts to a few thousand characters.")
        if path.endswith(JOIN_SUFFIX) and self.pending is not None:
            # One join at a time, so that parallel joins cannot all see the same count (they take milliseconds).
            self._join_lock = self._join_lock or asyncio.Lock()
            async with self._join_lock:
                n = self.pending(host)
                if n >= self.policy.jobs_per_client:
                    log.info("busy: %s already has %d jobs", host, n)
                    self.refused("busy")
                    return await _busy(send, BUSY.format(n=n))
                return await self.app(scope, receive, send)
        return await self.app(scope, receive, send)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None  # chunked: refused (browsers and Gradio's clients always send a length for JSON)


async def _busy(send, message: str) -> None:
    """Refuse a join the way Gradio refuses an invalid one (422 and a list of verdicts), because that is what both
    of its clients show: the page beside the event's first input, gradio_client as a ValidationError with the text.
    A 429 would reach gradio_client users as a bare "429 Too Many Requests"."""
    verdict = [{"__type__": "validate", "is_valid": False, "message": message, "parameter_name": "client"}]
    await _send_json(send, 422, {"detail": verdict})


async def _refuse(scope, send, status: int, message: str) -> None:
    """A JSON error whose `detail` the Gradio page shows as the event's error."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await _send_json(send, status, {"detail": message, "error": message})


async def _send_json(send, status: int, payload) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
