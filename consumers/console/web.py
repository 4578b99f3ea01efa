"""What every console page shares: templates, the session cookie, CSRF, and HTML errors.

Every console route is a :class:`ConsoleRoute`: before its handler runs, a POST must carry the
CSRF token of its session (or, for the sign-in form, of the sign-in cookie) in the form field
``csrf_token``, else the answer is 403 and nothing happens. Errors render as an HTML page
with the API's status and message (never a stack trace); "sign in first" is a 303 to
``/sign-in``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from consumers.api.access_log import AccessRecord
from consumers.api.auth import Principal
from consumers.api.context import ApiContext
from consumers.api.errors import ApiError, Forbidden
from consumers.api.staff import StaffCall, check_purpose
from consumers.console.sessions import Session, Sessions
from consumers.console.users import StaffUsers
from schemas.errors import HubError

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
STATIC_PATH = "/console/static"
SESSION_COOKIE = "leadhub_session"
SIGN_IN_COOKIE = "leadhub_sign_in"
templates = Jinja2Templates(directory=str(HERE / "templates"))


class Redirect(HubError):  # control flow, not an error
    """Answer with a 303 to ``location`` (e.g. to the sign-in page)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def context_of(request: Request) -> ApiContext:
    """The app's :class:`ApiContext`."""
    context: ApiContext = request.app.state.context
    return context


def users_of(context: ApiContext) -> StaffUsers:
    """The staff user store on the accounts database, on the app's clock."""
    return StaffUsers(context.credentials.engine, context.site, clock=lambda: context.clock())


def sessions_of(context: ApiContext) -> Sessions:
    """The session store on the accounts database, on the app's clock."""
    return Sessions(context.credentials.engine, context.site, clock=lambda: context.clock())


async def current_session(request: Request) -> Session | None:
    """The request's live session (looked up once per request), or None."""
    if not hasattr(request.state, "console_session"):  # not looked up yet (None: no session)
        token = request.cookies.get(SESSION_COOKIE)
        sessions = sessions_of(context_of(request))
        request.state.console_session = await run_in_threadpool(sessions.resume, token)
    found: Session | None = request.state.console_session
    return found


async def signed_in(request: Request) -> Session:
    """The live session; a redirect to the sign-in page if there is none."""
    session = await current_session(request)
    if session is None:
        raise Redirect("/sign-in")
    return session


async def reading(request: Request) -> Session:
    """A live session with its purpose chosen; else a redirect to sign in or to choose."""
    session = await signed_in(request)
    if session.purpose is None:
        raise Redirect("/purpose")
    return session


@dataclass(frozen=True)
class ConsoleCall(StaffCall):
    """A staff read made through a console page: accounted like the API's, as ``console
    <page>``, with the session id as the key id (see :meth:`account`)."""

    page: str = ""

    def account(self, endpoint: str, participant_ids: Any, rows: Any) -> None:
        """Write the access record of this page (503 if it cannot be written)."""
        from consumers.api.access_log import disclosures_of

        self.context.access_log.record(AccessRecord(
            user=self.principal.user, partner=self.recipient, purpose=self.purpose,
            at=self.now(), endpoint=f"console {self.page}",
            participant_ids=tuple(dict.fromkeys(participant_ids)),
            disclosures=tuple(disclosures_of(rows)), key_id=self.principal.key_id))


def call_for(session: Session, context: ApiContext, page: str) -> ConsoleCall:
    """The staff call of a console page, its purpose checked as the API checks X-Purpose."""
    principal = Principal(f"console:{session.session_id}", "staff", session.partner,
                          session.user_name)
    purpose = check_purpose(session.purpose, principal, context)
    return ConsoleCall(principal, purpose, context, page)


def render(request: Request, name: str, values: Mapping[str, Any], *,
           status: int = 200) -> HTMLResponse:
    """Render a template with the page frame's values (user, partner, CSRF token)."""
    session: Session | None = getattr(request.state, "console_session", None)
    context = context_of(request)
    frame = {"session": session, "site_name": context.site.name, "static": STATIC_PATH,
             "csrf_token": session.csrf_token if session else None}
    response = templates.TemplateResponse(request, name, {**frame, **values},
                                          status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'")
    return response


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """The HTML page of an error (its status and a plain message)."""
    titles = {400: "Check the request", 401: "Sign in", 403: "Not allowed",
              404: "Not found", 503: "Try again later"}
    return render(request, "error.html", {"title": titles.get(status, "Error"),
                                          "message": message}, status=status)


async def check_csrf(request: Request) -> None:
    """Raise 403 unless the POSTed form carries the right CSRF token."""
    form = await request.form()
    presented = form.get("csrf_token")
    token = presented if isinstance(presented, str) else None
    if request.url.path == "/sign-in":
        expected = request.cookies.get(SIGN_IN_COOKIE)
        ok = bool(token and expected) and hmac.compare_digest(
            str(token).encode(), str(expected).encode())
    else:
        session = await current_session(request)
        if session is None:  # nothing to forge without a session: go sign in
            raise Redirect("/sign-in")
        ok = session.csrf_ok(token)
    if not ok:
        raise Forbidden("this form is out of date or was not sent from the console; reload "
                        "the page and try again", code="CSRF_FAILED")


class ConsoleRoute(APIRoute):
    """A console route: CSRF on every POST, HTML errors, redirects for sign-in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                if request.method == "POST":
                    await check_csrf(request)
                return await inner(request)
            except Redirect as redirect:
                return RedirectResponse(redirect.location, status_code=303)
            except ApiError as exc:
                return error_page(request, exc.status, exc.message)
            except RequestValidationError:
                return error_page(request, 400, "a field of this page is not valid; check it "
                                                "and try again")

        return handler


def set_cookie(response: Response, request: Request, name: str, value: str,
               max_age: int | None = None) -> None:
    """Set an HttpOnly, SameSite=Strict cookie (Secure when served over HTTPS)."""
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
