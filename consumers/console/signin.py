"""Sign-in, choosing the purpose of use, and sign-out."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from consumers.api.errors import BadRequest, Unauthorized
from consumers.console.web import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    ConsoleRoute,
    context_of,
    current_session,
    render,
    sessions_of,
    set_cookie,
    signed_in,
    users_of,
)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _field(form: object, name: str) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    return value if isinstance(value, str) else ""


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    """The sign-in form (a fresh sign-in CSRF token in a cookie and in the form)."""
    if await current_session(request) is not None:
        return RedirectResponse("/", status_code=303)
    return _sign_in_form(request, None, 200)


def _sign_in_form(request: Request, message: str | None, status: int) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "sign_in.html", {"sign_in_token": token, "message": message},
                      status=status)
    set_cookie(response, request, SIGN_IN_COOKIE, token, max_age=3600)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """Check the user name, password and code; open a session and go choose the purpose."""
    form = await request.form()
    context = context_of(request)
    users, sessions = users_of(context), sessions_of(context)
    user, password, code = (_field(form, "user")[:128], _field(form, "password")[:1024],
                            _field(form, "code")[:16])

    def work() -> str:
        name, partner = users.verify(user, password, code)
        token, _ = sessions.start(name, partner)
        return token

    try:
        token = await run_in_threadpool(work)
    except Unauthorized as exc:
        return _sign_in_form(request, exc.message, 401)
    response = RedirectResponse("/purpose", status_code=303)
    set_cookie(response, request, SESSION_COOKIE, token)
    response.delete_cookie(SIGN_IN_COOKIE, path="/")
    return response


@router.get("/purpose")
async def purpose_page(request: Request) -> Response:
    """Choose the purpose of use for this session (from the partner's purposes)."""
    session = await signed_in(request)
    if session.purpose is not None:
        return RedirectResponse("/", status_code=303)
    return render(request, "purpose.html", {"purposes": [session.partner.purpose]})


@router.post("/purpose")
async def choose_purpose(request: Request) -> Response:
    """Fix the session's purpose (one the partner acts under), then show the caseload."""
    session = await signed_in(request)
    form = await request.form()
    purpose = _field(form, "purpose")
    if purpose != session.partner.purpose:
        raise BadRequest("choose one of the purposes listed", code="PURPOSE_NOT_PERMITTED")
    token = request.cookies.get(SESSION_COOKIE, "")
    await run_in_threadpool(sessions_of(context_of(request)).choose_purpose, token, purpose)
    return RedirectResponse("/", status_code=303)


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    """End the session and forget the cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await run_in_threadpool(sessions_of(context_of(request)).end, token)
    response = RedirectResponse("/sign-in?signed_out=1", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
