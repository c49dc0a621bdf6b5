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
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import SetupError

log = logging.getLogger(__name__)

PUBLIC_PREFIXES = ("/take/", "/health/")  # what every client may reach, whatever the access rule
UPLOAD_SUFFIX = "/upload"  # multipart uploads: bounded by Gradio's own max_file_size instead
JOIN_SUFFIX = "/queue/join"
BUSY = "Busy: you already have {n} pictures on the way from this address; wait for one of them, then try again."
FULL = "Busy: {n} pictures are already waiting for the GPU; please try again in a minute."
CLOSED = "Not found."
SIGN_IN = "Not authenticated: sign in first."
TOO_MANY_LOGINS = "Too many failed sign-ins from this address; try again in {s} seconds."

# Gradio's routes (gradio/routes.py, API prefix /gradio_api) as the door sees them. Deny by default: a route not
# listed here answers 404 before Gradio sees it, so a route a later Gradio adds stays closed until it is listed.
#   admit   puts an event in the queue: counted at the one admission point (Guard._admit)
#   direct  runs a function outside the queue (/run/<api>, /api/<api>): only events that never queue (light ones:
#           token counts, Stop, timers); an event that runs the model answers 404 there (and Gradio's api_open=False)
#   open    reachable without signing in: the login form and what the login page itself loads (Gradio's own
#           scripts, styles and icons, the same for everyone), and health
#   login   the login form: failures are counted per address (LoginLimiter)
#   signed  everything else a face uses: behind the login, when there is one
#   startup Gradio's own launch() calls it before anyone can sign in: open until it has run, then signed
_API = "/gradio_api"
ROUTES: tuple[tuple[frozenset, re.Pattern, str], ...] = tuple(
    (frozenset(methods.split()), re.compile(pattern), kind) for methods, pattern, kind in (
        ("POST", rf"{_API}/queue/join", "admit"),
        ("POST", rf"{_API}/call/v2/[^/]+/?", "admit"),
        ("POST", rf"{_API}/call/[^/]+/?", "admit"),
        ("POST", rf"{_API}/(run|api)/[^/]+/?", "direct"),
        ("POST", r"/login/?", "login"),
        ("GET HEAD", r"/health/.*", "open"),
        ("GET HEAD", r"/", "open"),  # the page, or Gradio's login page before signing in
        ("GET HEAD", r"/(assets|static|svelte)/.*", "open"),
        ("GET HEAD", rf"({_API})?/theme\.css|/favicon\.ico|/manifest\.json|/robots\.txt|/pwa_icon(/\d+)?", "open"),
        ("GET", r"/logout/?", "open"),
        ("GET", rf"{_API}/login_check/?", "open"),  # answers 401 itself until signed in
        ("GET HEAD", r"/take/[^/]+", "signed"),
        ("GET", r"/metrics", "signed"),  # server.metrics_route: open with FP8DEMO_METRICS_PUBLIC=1
        ("GET", r"/config/?", "signed"),
        ("GET", rf"{_API}/(info|openapi\.json)/?", "signed"),  # the API page
        ("GET HEAD", rf"{_API}/(file=|file/).*", "signed"),
        ("GET", rf"{_API}/queue/(data|status)", "signed"),
        ("GET", rf"{_API}/call/[^/]+/[^/]+", "signed"),  # the result stream of a /call
        ("GET", rf"{_API}/call/v2/[^/]+/[^/]+", "signed"),
        ("GET", rf"{_API}/heartbeat/[^/]+", "signed"),
        ("GET", rf"{_API}/startup-events", "startup"),  # Gradio's launch calls it once, unsigned; then signed
        ("GET", rf"{_API}/(upload_progress|user/?|app_id/?|runs/?)", "signed"),
        ("GET", rf"{_API}/run-history/(buckets|records)(/.*)?", "signed"),
        ("POST", rf"{_API}/(cancel|reset/?)", "signed"),
        ("POST", rf"{_API}/upload", "signed"),
    ))


def route_kind(method: str, path: str) -> str | None:
    """The kind of route `method path` is (see ROUTES), or None: closed."""
    for methods, pattern, kind in ROUTES:
        if method in methods and pattern.fullmatch(path):
            return kind
    return None


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


def signed_in(request) -> bool:
    """Whether the request (a Starlette request) carries the login of the Gradio app it reached (always, when the app
    has none)."""
    app = request.app
    if getattr(app, "auth", None) is None:
        return True
    token = (request.cookies.get(f"access-token-{app.cookie_id}")
             or request.cookies.get(f"access-token-unsecure-{app.cookie_id}"))
    return app.tokens.get(token) is not None


class LoginLimiter:
    """Failed sign-ins per address: after `limit` failures within `window` seconds the address is refused (429) until
    the oldest of them is older than the window."""

    def __init__(self, limit: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, deque] = {}

    def wait(self, host: str) -> int:
        """Seconds this address must wait before it may try again; 0: it may try now."""
        now = self.clock()
        failures = self._failures.get(host)
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        if not failures:
            self._failures.pop(host, None)
            return 0
        return max(1, int(failures[0] + self.window - now + 0.999)) if len(failures) >= self.limit else 0

    def failed(self, host: str) -> None:
        if len(self._failures) > 100_000:  # a flood of addresses: forget the quiet ones rather than grow for ever
            self._failures = {h: f for h, f in self._failures.items() if len(f) >= self.limit}
        self._failures.setdefault(host, deque()).append(self.clock())


class Guard:
    """ASGI middleware: the door in front of every Gradio route, and the one admission point of the queue.

    Every request is matched against ROUTES (deny by default, 404), the face's access rule (403), the login when
    the app has one (401; sign-in failures rate-limited, 429) and the body size cap (413). A request that would put
    an event in the queue, whichever route it took (/queue/join, /call/<api>, /call/v2/<api>), is admitted here
    alone: its values are counted against the event's inputs (422 naming the missing or extra ones), then, one at a
    time, the client's jobs against `jobs_per_client` and the queue's length against its bound, and Gradio's own
    join runs while the next one waits, so that no two joins see the same counts. `/run/<api>` and `/api/<api>`
    serve only events that never queue.

    `blocks` is the Gradio app (its queue and its functions; None: no admission counting, as in unit tests);
    `refused(reason)` hears of every refusal ("access", "too-large", "busy", "queue-full", "closed", "auth",
    "login-limit", "invalid"), for the metrics."""

    def __init__(self, app, policy: AccessPolicy, blocks=None, refused: Callable[[str], None] | None = None,
                 logins: LoginLimiter | None = None):
        self.app, self.policy, self.blocks = app, policy, blocks
        self.pending = queued_jobs(blocks) if blocks is not None else None
        self.refused = refused or (lambda reason: None)
        self.logins = logins or LoginLimiter()
        self._join_lock: asyncio.Lock | None = None
        self._api_info: dict | None = None  # the named endpoints' parameters, read once

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = (scope.get("client") or ("local", 0))[0]
        path = scope.get("path", "")
        method = scope.get("method", "WS") if scope["type"] == "http" else "WS"
        rule = self.policy.rule
        public = path.startswith(self.policy.public)
        if not rule.allows(host) and not public:
            log.info("refused %s %s from %s: not an allowed client", method, path[:80], host)
            self.refused("access")
            return await _refuse(scope, send, 403, rule.refusal)
        kind = route_kind(method, path)
        # under a login every route but the open ones (health, the login page) wants it, closed ones included;
        # /metrics only when the operator made it public (FP8DEMO_METRICS_PUBLIC)
        exempt = kind in ("open", "login") or (public and kind == "signed" and not path.startswith("/take/")) \
            or (kind == "startup" and not getattr(scope.get("app"), "startup_events_triggered", True))
        if not exempt and not self._signed_in(scope):
            self.refused("auth")
            return await _refuse(scope, send, 401, SIGN_IN)
        if kind is None:
            self.refused("closed")
            return await _refuse(scope, send, 404, CLOSED)
        if method != "POST":
            return await self.app(scope, receive, send)
        if not path.endswith(UPLOAD_SUFFIX):
            length = _content_length(scope)
            if length is None or length > self.policy.max_body_bytes:
                self.refused("too-large")
                return await _refuse(scope, send, 413 if length else 411,
                                     f"Requests are limited to {self.policy.max_body_bytes // 1024} KiB; "
                                     "prompts to a few thousand characters.")
        if kind == "login":
            return await self._login(scope, receive, send, host)
        if kind == "admit":
            return await self._admit(scope, receive, send, host, path)
        if kind == "direct":
            return await self._direct(scope, receive, send, path)
        return await self.app(scope, receive, send)

    def _signed_in(self, scope) -> bool:
        from starlette.requests import Request

        app = scope.get("app")
        return app is None or signed_in(Request(scope))

    async def _login(self, scope, receive, send, host: str):
        wait = self.logins.wait(host)
        if wait:
            log.info("login refused for %s: too many failures", host)
            self.refused("login-limit")
            return await _send_json(send, 429, {"detail": TOO_MANY_LOGINS.format(s=wait)},
                                    headers=[(b"retry-after", str(wait).encode())])

        async def watch(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.logins.failed(host)
            await send(message)

        return await self.app(scope, receive, watch)

    async def _admit(self, scope, receive, send, host: str, path: str):
        """The one admission point for events that join the queue."""
        body = await _read_body(receive)  # before the lock: a slow sender holds up no one else
        replay = _replay(body)
        if self.blocks is None:
            return await self.app(scope, replay, send)
        fn, problem = self._function(path, body)
        if problem:
            self.refused("invalid")
            return await _verdict(send, problem[0], problem[1])
        self._join_lock = self._join_lock or asyncio.Lock()
        async with self._join_lock:  # one join at a time: parallel joins cannot all see the same counts
            n = self.pending(host)
            if n >= self.policy.jobs_per_client:
                log.info("busy: %s already has %d jobs", host, n)
                self.refused("busy")
                return await _verdict(send, "client", BUSY.format(n=n))
            queue = getattr(self.blocks, "_queue", None)
            size, bound = (len(queue), queue.max_size) if queue is not None else (0, None)
            if bound is not None and size >= bound:
                log.info("queue full (%d): refused a join from %s", size, host)
                self.refused("queue-full")
                return await _send_json(send, 503, {"detail": FULL.format(n=size), "error": FULL.format(n=size)})
            return await self.app(scope, replay, send)

    async def _direct(self, scope, receive, send, path: str):
        """/run/<api> and /api/<api>: only events that never queue; the rest answer 404 (use the queue)."""
        body = await _read_body(receive)
        if self.blocks is not None:
            fn, problem = self._function(path, body)
            if fn is None or getattr(fn, "queue", True):
                self.refused("closed")
                message = problem[1] if fn is None else \
                    "Not found: events that make pictures are called through the queue (/call/<api> or gradio_client)."
                return await _refuse(scope, send, 404, message)
            if problem:
                self.refused("invalid")
                return await _verdict(send, problem[0], problem[1])
        return await self.app(scope, _replay(body), send)

    def _function(self, path: str, body: bytes):
        """(the event a request names, or None; (parameter, message) when its values cannot be taken, or None)."""
        try:
            payload = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            return None, ("data", "The request body is not JSON.")
        if not isinstance(payload, dict):
            return None, ("data", 'The request body must be a JSON object, e.g. {"data": [...]}.')
        fns = getattr(self.blocks, "fns", {})
        index = payload.get("fn_index")
        api_name = None if path.endswith(JOIN_SUFFIX) else path.rstrip("/").rsplit("/", 1)[-1]
        if index is not None:
            fn = fns.get(index) if isinstance(index, int) and not isinstance(index, bool) else None
        else:
            fn = next((f for f in fns.values() if api_name is not None and f.api_name == api_name), None)
        if fn is None:
            return None, ("fn_index", f"No such event: {index if index is not None else api_name!r}.")
        if "/call/v2/" in path:
            return fn, self._keyword_problem(api_name, payload)
        return fn, arity_problem(fn, payload.get("data"))

    def _keyword_problem(self, api_name: str, payload: dict) -> tuple[str, str] | None:
        """/call/v2/<api> takes keyword arguments: an unknown or a missing one is named here (Gradio would answer
        500 with a traceback), with Gradio's own matching of keywords to parameters."""
        from gradio_client.utils import construct_args

        if self._api_info is None:
            self._api_info = self.blocks.get_api_info()
        endpoint = self._api_info.get("named_endpoints", {}).get("/" + api_name)
        if endpoint is None:
            return "api_name", f"No such endpoint: /{api_name}."
        try:
            construct_args(endpoint["parameters"], (), {k: v for k, v in payload.items() if k != "oauth_token"})
        except (TypeError, ValueError) as error:
            message = str(error).split(" Please click")[0]
            named = re.search(r"`([^`]+)`|argument: (\S+)", message)
            return (named.group(1) or named.group(2)) if named else "data", message
        return None


def arity_problem(fn, data) -> tuple[str, str] | None:
    """(parameter, message) when `data` is not a list of the event's values (all its inputs, or those an API caller
    gives: all but states), naming the first missing or the count of extra ones; None when it fits."""
    inputs = list(getattr(fn, "inputs", []))
    names = _input_names(fn)
    api = [name for block, name in zip(inputs, names, strict=True) if not getattr(block, "skip_api", False)]
    if not isinstance(data, list):
        return "data", f'"data" must be a list of the values {", ".join(api)}.'
    if len(data) in (len(inputs), len(api)):
        return None
    if len(data) < len(api):
        missing = api[len(data):]
        return missing[0], f"Missing value{'s' if len(missing) > 1 else ''} for {', '.join(missing)}: " \
                           f"{fn.api_name or 'this event'} takes {len(api)} values ({', '.join(api)})."
    return "data", f"{fn.api_name or 'This event'} takes {len(api)} values ({', '.join(api)}), got {len(data)}."


def _input_names(fn) -> list[str]:
    """The names of an event's inputs as its API page lists them (Gradio's own naming), else param_<i>."""
    inputs = list(getattr(fn, "inputs", []))
    names = list(getattr(fn, "input_parameter_names", None) or [])
    if len(names) != len(inputs):
        names = [None] * len(inputs)
    return [str(name) if name else f"param_{i}" for i, name in enumerate(names)]


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # as a client that says nothing more until it disconnects
        return {"type": "http.disconnect"}

    return receive


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None  # chunked: refused (browsers and Gradio's clients always send a length for JSON)


async def _verdict(send, parameter: str, message: str) -> None:
    """Refuse a join the way Gradio refuses an invalid one (422 and a list of verdicts naming the parameter), because
    that is what both of its clients show: the page beside the event's first input, gradio_client as a
    ValidationError with the text. A 429 would reach gradio_client users as a bare "429 Too Many Requests"."""
    verdict = [{"__type__": "validate", "is_valid": False, "message": message, "parameter_name": parameter}]
    await _send_json(send, 422, {"detail": verdict})


async def _refuse(scope, send, status: int, message: str) -> None:
    """A JSON error whose `detail` the Gradio page shows as the event's error."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await _send_json(send, status, {"detail": message, "error": message})


async def _send_json(send, status: int, payload, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
