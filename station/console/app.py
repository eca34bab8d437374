"""The console's pages and actions (Starlette): who may see what is checked on every request.

Pages are rendered on the server (Jinja2) and kept live by one event stream per page (live.py); the
browser runs htmx, its SSE extension and console.js (keys, image viewer), all served from the package.
Every POST carries the session's CSRF token. Nothing here touches a device: lane, alarm, model and PLC
actions go through the control channel's own checks and audit (station/control.py).
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from station import customs, reviews
from station.accounts import authenticate, users
from station.config import WebSection
from station.console import live, queries
from station.console.auth import COOKIE, LOGIN_COOKIE, LoginLimit, Session, Sessions, csrf_ok
from station.console.images import ImageService, ScanInfo
from station.console.server import LaneAccess, Reader, serve, url_of
from station.kernel.viewer import TOOLS, View, ViewError
from station.metrics import StationMetrics
from station.store import Store

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAX_BODY = 16 * 1024  # no form of the console comes near this; a bigger body is refused unread
PAGE = 50  # queue and history rows per page
LOCK_S = 90.0  # an item page holds its lock this long after its last keep-alive (sent every 30 s)
ACCOUNT_CHECK_S = 5.0  # how often a session's account is read again from the store

Handler = Callable[[Request, Session], Awaitable[Response]]


class Console:
    """The console application: its sessions, locks and services over one running lane."""

    def __init__(self, access: LaneAccess, store_path: Path, images_dir: Path, web: WebSection,
                 sock: socket.socket) -> None:
        self.access = access
        self.web, self.sock = web, sock  # the configuration, and the socket bound for it (server.bind)
        self.url = url_of(web, sock)
        self.read = Reader(store_path)
        self.check_password = Reader(store_path, background=True, name="console-login")
        self.images = ImageService(images_dir)
        self.sessions = Sessions(web.session_hours * 3600, web.idle_minutes * 60)
        self.limit = LoginLimit(web.login_attempts)
        self.locks = ItemLocks(LOCK_S)
        self.secure_cookies = web.tls_cert is not None
        self.changes = live.Changes()  # verdicts and locks: what the lane's status does not say
        self.metrics = None if access.lane_metrics is None or not web.metrics else StationMetrics(
            access.board, access.lane_metrics, data_dir=store_path.parent, serial=access.serial,
            rules_version=access.rules_version, min_free_bytes=access.min_free_bytes)
        self.shared = live.Shared()  # what every open page of a kind shows alike, made once
        self.templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True))
        self.templates.env.globals.update(tools=TOOLS, verdicts=queries.CHOICES,
                                          override_reasons=reviews.OVERRIDE_REASONS, screening_methods=customs.METHODS)
        self.templates.env.filters.update(clock=live.clock, ago=live.ago, when=live.when)
        for name in self.templates.env.list_templates():  # compiled now, not on the lane's loop at a first visit
            self.templates.env.get_template(name)
        routes = [
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.page(self.logout, "view"), methods=["POST"]),
            Route("/", self.page(self.lane_page, "view")),
            Route("/queue", self.page(self.queue_page, "judge")),
            Route("/items/{pk:int}", self.page(self.item_page, "view")),
            Route("/items/{pk:int}/image", self.page(self.item_image, "view", api=True)),
            Route("/items/{pk:int}/verdict", self.page(self.verdict, "judge"), methods=["POST"]),
            Route("/items/{pk:int}/lock", self.page(self.keep_lock, "judge"), methods=["POST"]),
            Route("/items/{pk:int}/release", self.page(self.release_lock, "judge"), methods=["POST"]),
            Route("/verdicts/{vid:int}/undo", self.page(self.undo, "judge"), methods=["POST"]),
            Route("/history", self.page(self.history_page, "view")),
            Route("/technician", self.page(self.technician_page, "technician")),
            Route("/technician/plc-write", self.page(self.plc_write, "technician"), methods=["POST"]),
            Route("/technician/model/{action:str}", self.page(self.model_action, "technician"), methods=["POST"]),
            Route("/technician/scanner-selftest", self.page(self.selftest, "technician"), methods=["POST"]),
            Route("/alarms/{code:str}/ack", self.page(self.alarm_ack, "ack"), methods=["POST"]),
            Route("/alarms/{code:str}/clear", self.page(self.alarm_clear, "lane"), methods=["POST"]),
            Route("/lane/{action:str}", self.page(self.lane_action, "lane"), methods=["POST"]),
            Route("/events", self.page(self.events, "view", api=True)),
            # Prometheus scrapes without a session: counts and states only, no item or person ([web] metrics)
            *([Route("/metrics", self.metrics_text)] if self.metrics is not None else []),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        self.app: ASGIApp = BodyLimit(Starlette(routes=routes, exception_handlers={HTTPException: self.error}),
                                      MAX_BODY)

    async def serve(self) -> None:
        """Serve the pages until cancelled (a task of the daemon's group)."""
        await serve(self.app, self.sock, self.web)

    def close(self) -> None:
        self.read.close()
        self.check_password.close()
        self.images.close()

    # ---- plumbing -----------------------------------------------------------------------------

    def page(self, handler: Handler, permission: str, *, api: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """`handler` behind the session, account, role and (for a POST) CSRF checks. Without a session a page
        sends the browser to the login; an `api` answer (an image, the event stream) and a POST get 401."""
        async def checked(request: Request) -> Response:
            for name, value in request.path_params.items():  # {pk:int} takes any digits; SQLite's are 64-bit
                if isinstance(value, int) and not 0 <= value < 2**63:
                    raise HTTPException(404, f"no {'item' if name == 'pk' else 'verdict'} {value}")
            session = await self._session(request)
            if session is None:
                if request.method == "GET" and not api and "hx-request" not in request.headers:
                    return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
                raise HTTPException(401, "not logged in (or the session ended): log in again")
            if request.method == "POST":
                form = await _form(request)
                given = form.get("csrf") or request.headers.get("x-csrf-token")
                if not csrf_ok(session.csrf, given if isinstance(given, str) else None):
                    raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")
            if not session.may(permission):
                raise HTTPException(403, f"your role ({session.role}) may not do this: it needs {permission!r}")
            return await handler(request, session)
        return checked

    async def _session(self, request: Request) -> Session | None:
        """The request's session, if its account still exists, is enabled and has the same role: an account
        disabled or changed at the box (`station user ...`) ends its sessions within ACCOUNT_CHECK_S."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None or time.monotonic() - session.checked < ACCOUNT_CHECK_S:
            return session
        user = await self.read(lambda store: next((u for u in users(store) if u.name == session.user), None))
        if user is None or not user.active or user.role != session.role:
            self.sessions.close_user(session.user)
            self.locks.release_all(session.user)
            return None
        session.checked = time.monotonic()
        return session

    def render(self, request: Request, name: str, session: Session | None, status: int = 200,
               **context: Any) -> Response:
        lane = self.access.board.current
        response: Response = self.templates.TemplateResponse(request, name, {
            "session": session, "lane": lane, "site": self.access.topics.site, "lane_id": self.access.topics.lane,
            **context}, status_code=status)
        return response

    async def error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if "hx-request" in request.headers or request.url.path.endswith("/image"):
            return Response(exc.detail, exc.status_code, media_type="text/plain")
        session = self.sessions.get(request.cookies.get(COOKIE))
        return self.render(request, "error.html", session, exc.status_code, code=exc.status_code, detail=exc.detail)

    async def audit(self, who: str, action: str) -> None:
        await self._write(lambda store: store.add_audit(who, action))

    async def metrics_text(self, request: Request) -> Response:
        assert self.metrics is not None
        return Response(await self.metrics.scrape(self.read), media_type=CONTENT_TYPE_LATEST)

    # ---- login --------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
        response = self.render(request, "login.html", None, next=_local(request.query_params.get("next")),
                               csrf=token, error=None)
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=self.secure_cookies,
                            path="/login")
        return response

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        name, password = str(form.get("name", ""))[:64], str(form.get("password", ""))[:1024]
        token = request.cookies.get(LOGIN_COOKIE)
        if not token or not csrf_ok(token, str(form.get("csrf", ""))):
            raise HTTPException(403, "the login form's token is missing or wrong: reload the page")
        address = request.client.host if request.client else "?"
        if wait := self.limit.retry_after(name, address):
            await self.audit(name or "?", f"console login refused: too many failed attempts (from {address})")
            response = self.render(request, "login.html", None, 429, next=_local(form.get("next")), csrf=token,
                                   error=f"Too many failed attempts: try again in {wait:.0f} s.")
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        user = await self.check_password(lambda store: authenticate(store, name, password))
        if user is None:
            self.limit.failed(name, address)
            await self.audit(name or "?", f"console login failed (from {address})")
            return self.render(request, "login.html", None, 401, next=_local(form.get("next")), csrf=token,
                               error="Wrong name or password, or the account is disabled.")
        self.limit.succeeded(name)
        session = self.sessions.open(user.name, user.role)
        await self.audit(user.name, f"console login ({user.role}, from {address})")
        done = RedirectResponse(_local(form.get("next")) or "/", 303)
        done.set_cookie(COOKIE, session.token, httponly=True, samesite="strict", secure=self.secure_cookies)
        done.delete_cookie(LOGIN_COOKIE, path="/login")
        return done

    async def logout(self, request: Request, session: Session) -> Response:
        self.sessions.close(session.token)
        self.locks.release_all(session.user)
        await self.audit(session.user, "console logout")
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response

    # ---- the live lane ------------------------------------------------------------------------

    async def lane_page(self, request: Request, session: Session) -> Response:
        last, scan = await self.current_item()
        return self.render(request, "lane.html", session, last=last, scan=scan, belt=live.belt(self.access),
                           pending=await self.read(reviews.pending_count))

    async def current_item(self) -> tuple[reviews.ItemView | None, ScanInfo | None]:
        """The item stored last, and its scan's size (the boxes are drawn over it)."""
        last = await self.read(queries.latest_item)
        return last, await self.images.info(last.image_path) if last else None

    async def events(self, request: Request, session: Session) -> Response:
        return live.stream(self, request, session)

    async def alarm_ack(self, request: Request, session: Session) -> Response:
        return await self._control(request, session, {"action": "alarm-ack", "code": request.path_params["code"]})

    async def alarm_clear(self, request: Request, session: Session) -> Response:
        return await self._control(request, session, {"action": "alarm-clear", "code": request.path_params["code"]})

    async def lane_action(self, request: Request, session: Session) -> Response:
        action = request.path_params["action"]
        if action not in ("start", "stop", "reset", "maintenance"):
            raise HTTPException(404, f"no lane action {action!r}")
        return await self._control(request, session, {"action": action})

    async def _control(self, request: Request, session: Session, command: dict[str, object]) -> Response:
        """One action through the control channel (its checks, its audit); the answer says what happened."""
        reply = await self.access.control.handle(command, session.user)
        notice = _outcome(command, reply)
        failed = not reply.get("ok", False)
        if "hx-request" in request.headers:
            return Response(notice, 409 if failed else 200, media_type="text/plain")
        back = _local(urlsplit(request.headers.get("referer", "")).path) or "/"
        return RedirectResponse(f"{back}?{urlencode({'notice': notice})}", 303)

    # ---- the review queue and the item ----------------------------------------------------------

    async def queue_page(self, request: Request, session: Session) -> Response:
        rows = await self.read(lambda store: reviews.queue(store, limit=PAGE))
        pending = await self.read(reviews.pending_count)
        newest = await self.read(reviews.newest_pending_id)  # "N new" counts what arrives after this
        return self.render(request, "queue.html", session, rows=rows, pending=pending, newest=newest,
                           locks=self.locks.holders(), notice=request.query_params.get("notice"),
                           undo=await self._undo_offer(request, session))

    async def item_page(self, request: Request, session: Session) -> Response:
        pk = request.path_params["pk"]
        view = await self.read(lambda store: reviews.item_view(store, pk))
        if view is None:
            raise HTTPException(404, f"no stored item {pk}")
        judging = session.may("judge") and view.decision == "INSPECT" and view.current_verdict is None
        if judging:
            holder = self.locks.take(pk, session.user)
            if holder != session.user:
                raise HTTPException(423, f"item {pk} is being judged by {holder}: it stays locked to them until "
                                         "they give a verdict or leave it")
            self.changes.bump()
        return self.render(request, "item.html", session, item=view, judging=judging, shown_at=time.time(),
                           threat_classes=self.access.threat_classes(), scan=await self.images.info(view.image_path),
                           notice=request.query_params.get("notice"), undo=await self._undo_offer(request, session))

    async def item_image(self, request: Request, session: Session) -> Response:
        pk = request.path_params["pk"]
        query = dict(request.query_params)
        fmt = query.pop("fmt", "png")  # lossless: a screener never judges compression artefacts
        size = query.pop("size", "large")
        try:
            view = View.parse(query)
        except ViewError as err:
            raise HTTPException(400, str(err)) from err
        path = await self.read(lambda store: queries.image_path(store, pk))
        if path is None:
            raise HTTPException(404, f"item {pk} has no stored scan")
        data, media = await self.images.render(path, view, fmt, size)
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    async def keep_lock(self, request: Request, session: Session) -> Response:
        holder = self.locks.take(request.path_params["pk"], session.user)
        return Response(holder, 200 if holder == session.user else 423, media_type="text/plain")

    async def release_lock(self, request: Request, session: Session) -> Response:
        self.locks.release(request.path_params["pk"], session.user)
        self.changes.bump()
        return Response("released", media_type="text/plain")

    async def verdict(self, request: Request, session: Session) -> Response:
        pk = request.path_params["pk"]
        form = await _form(request)
        holder = self.locks.take(pk, session.user)
        if holder != session.user:
            raise HTTPException(423, f"item {pk} is being judged by {holder}")
        shown = _number(form.get("shown_at"))
        topics = self.access.topics
        def text(key: str) -> str | None:
            value = form.get(key)
            return value.strip() or None if isinstance(value, str) else None

        methods = tuple(str(m) for m in form.getlist("methods"))

        def judge(store: Store) -> reviews.Verdict:
            return reviews.record_verdict(store, pk, text("verdict") or "", session.user, topic=topics.verdict,
                                          site=topics.site, lane=topics.lane, shown_at=shown,
                                          threat_class=text("threat_class"), reason_code=text("reason_code"),
                                          note=text("note"), methods=methods, alert_topic=topics.alert,
                                          screening_topic=topics.screening_result)
        try:
            done = await self._write(judge)
        except reviews.VerdictError as err:
            why = str(err)
            await self._write(lambda store: reviews.audit_refusal(store, session.user, f"verdict on item {pk}", why))
            raise HTTPException(422, str(err)) from err
        self.locks.release(pk, session.user)
        self.changes.bump()
        self.access.notify()
        others = self.locks.held_by_others(session.user)
        waiting = await self.read(lambda store: reviews.queue(store, limit=len(others) + 1))
        nxt = [row for row in waiting if row.id not in others]
        target = f"/items/{nxt[0].id}" if nxt else "/queue"
        return RedirectResponse(f"{target}?{urlencode({'undo': done.id})}", 303)

    async def undo(self, request: Request, session: Session) -> Response:
        vid = request.path_params["vid"]
        topics = self.access.topics

        def undo(store: Store) -> reviews.Verdict:
            return reviews.undo_verdict(store, vid, session.user, topic=topics.verdict, site=topics.site,
                                        lane=topics.lane, alert_topic=topics.alert)
        try:
            undone = await self._write(undo)
        except reviews.VerdictError as err:
            why = str(err)
            await self._write(lambda store: reviews.audit_refusal(store, session.user, f"undo of verdict {vid}", why))
            raise HTTPException(409, str(err)) from err
        self.changes.bump()
        self.access.notify()
        return RedirectResponse(f"/items/{undone.item}", 303)

    async def _undo_offer(self, request: Request, session: Session) -> reviews.Verdict | None:
        vid = _number(request.query_params.get("undo"))
        if vid is None:
            return None
        verdict = await self.read(lambda store: queries.verdict(store, int(vid)))
        if verdict is None or verdict.by != session.user or verdict.undone_at is not None:
            return None
        return verdict if time.time() - verdict.at < reviews.UNDO_WINDOW_S else None

    async def _write(self, job: Callable[[Store], Any]) -> Any:
        done = self.access.writer.submit(job, want_result=True)
        assert done is not None
        return await done

    # ---- history --------------------------------------------------------------------------------

    async def history_page(self, request: Request, session: Session) -> Response:
        q = request.query_params
        try:
            filters = queries.HistoryFilter.parse(q)
        except ValueError as err:
            raise HTTPException(400, str(err)) from err
        started = time.perf_counter()
        try:
            rows = await self.read(lambda store: queries.search(store, filters, PAGE))
        except reviews.VerdictError as err:  # a decision or verdict the search does not know: it names it
            raise HTTPException(400, str(err)) from err
        took_ms = (time.perf_counter() - started) * 1000
        more = None
        if len(rows) == PAGE:
            more = "/history?" + urlencode({**{k: v for k, v in q.items() if k != "before"}, "before": rows[-1].id})
        return self.render(request, "history.html", session, rows=rows, filters=filters, q=q, more=more,
                           took_ms=took_ms, reasons=await self.read(queries.reason_codes))

    # ---- the technician's page ------------------------------------------------------------------

    async def technician_page(self, request: Request, session: Session) -> Response:
        models = await self.access.control.handle({"action": "model-status"}, session.user)
        alarms = await self.read(lambda store: queries.alarm_history(store, 50))
        return self.render(request, "technician.html", session, registers=live.registers(self.access),
                           frames=self.access.frames(), models=models, alarms=alarms,
                           notice=request.query_params.get("notice"))

    async def plc_write(self, request: Request, session: Session) -> Response:
        form = await _form(request)
        value: object = str(form.get("value", "")).strip()
        value = {"true": True, "false": False}.get(str(value).lower(), value)
        if isinstance(value, str):
            number = _number(value)
            if number is None:
                raise HTTPException(422, f"value {value!r}: a number or true/false")
            value = int(number) if number == int(number) else number
        return await self._control(request, session, {"action": "plc-write", "name": str(form.get("name", "")),
                                                      "value": value})

    async def model_action(self, request: Request, session: Session) -> Response:
        action = request.path_params["action"]
        if action not in ("load", "rollback"):
            raise HTTPException(404, f"no model action {action!r}")
        form = await _form(request)
        command: dict[str, object] = {"action": f"model-{action}"}
        if action == "load":
            command["path"] = str(form.get("path", "")).strip()
        return await self._control(request, session, command)

    async def selftest(self, request: Request, session: Session) -> Response:
        return await self._control(request, session, {"action": "scanner-selftest"})


class ItemLocks:
    """Which operator is judging which item: one at a time, until a verdict, a release or LOCK_S of silence."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self._held: dict[int, tuple[str, float]] = {}

    def take(self, pk: int, user: str, now: float | None = None) -> str:
        """Take (or keep) the lock for `user`; returns who holds it now."""
        now = time.monotonic() if now is None else now
        holder = self._held.get(pk)
        if holder is None or holder[0] == user or now - holder[1] > self.hold_s:
            self._held[pk] = (user, now)
            return user
        return holder[0]

    def release(self, pk: int, user: str) -> None:
        if self._held.get(pk, ("", 0.0))[0] == user:
            del self._held[pk]

    def release_all(self, user: str) -> None:
        for pk in [pk for pk, (who, _) in self._held.items() if who == user]:
            del self._held[pk]

    def holders(self, now: float | None = None) -> dict[int, str]:
        now = time.monotonic() if now is None else now
        return {pk: who for pk, (who, at) in self._held.items() if now - at <= self.hold_s}

    def held_by_others(self, user: str, now: float | None = None) -> frozenset[int]:
        return frozenset(pk for pk, who in self.holders(now).items() if who != user)


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413, before the application reads it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await Response(f"request body over {self.limit} bytes", 413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message
        await self.app(scope, counted, send)


async def _form(request: Request) -> FormData:
    """The request's form, parsed once (the CSRF check and the handler share it)."""
    cached = request.state._state.get("form")
    if cached is None:
        try:
            cached = await request.form(max_files=0, max_fields=20, max_part_size=MAX_BODY)
        except HTTPException:
            raise
        except Exception as err:  # a malformed body: say so, store nothing
            raise HTTPException(400, f"the form could not be read: {err}") from err
        request.state.form = cached
    assert isinstance(cached, FormData)
    return cached


def _outcome(command: dict[str, object], reply: dict[str, object]) -> str:
    """What the operator reads after an action: the refusal, or what was done."""
    what = " ".join(str(v) for k, v in command.items() if k != "action")
    action = f"{command['action']} {what}".strip()
    if reply.get("error"):
        return f"{action}: {reply['error']}"
    refused = reply.get("refused")
    if refused:
        return f"{action} refused: {', '.join(str(r) for r in refused) if isinstance(refused, list) else refused}"
    if "read_back" in reply:
        return f"{action}: written, read back {reply['read_back']}"
    result, model = reply.get("result"), reply.get("model")
    if isinstance(result, dict):
        return f"{action}: " + ", ".join(f"{k}={v}" for k, v in result.items())
    if str(command["action"]).startswith("model-") and isinstance(model, dict):
        return f"{action}: done, the lane runs {model.get('name')} {model.get('version')} (pin {model.get('sha256')})"
    return f"{action}: done" + (f" (lane {reply['state']})" if "state" in reply else "")


def _local(target: object) -> str:
    """`target` if it is a path on this site (no scheme, no host, no //), else ''."""
    text = str(target or "")
    return text if text.startswith("/") and not text.startswith("//") and "\\" not in text else ""


def _number(text: object) -> float | None:
    try:
        value = float(str(text))
    except ValueError:
        return None
    return value if value == value and abs(value) < 1e15 else None
