"""What every request passes before Gradio sees it: one ASGI middleware, `RequestGuard`.

- A removed user, or one whose password changed, is logged out at once. Gradio keeps each
  login as a token -> user name entry for as long as the process runs and never asks the
  users file again, so the guard drops the tokens of every user whose record changed.
- Bodies are bounded (`MAX_BODY_BYTES`): a page request is a vote, a few kB at most, so
  anything larger is refused with 413 before Gradio reads it into memory. The loop API
  takes clip uploads and bounds its own bodies (api.MAX_BODY_BYTES).
- The page before login reveals nothing: Gradio's login page embeds the whole API
  description (every endpoint with its schema), so the guard serves the same login page
  without it to anyone not logged in.
"""

from __future__ import annotations

from gradio.route_utils import get_root_url
from gradio.routes import templates
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .api import PREFIX as LOOP_API_PREFIX
from .users import UserStore

MAX_BODY_BYTES = 256 * 2**10  # a vote with the longest comment is under 20 kB


def logged_in_user(request: Request) -> str | None:
    """The user of the request's Gradio login cookie (None: not logged in)."""
    app = request.app
    token = (request.cookies.get(f"access-token-{app.cookie_id}")
             or request.cookies.get(f"access-token-unsecure-{app.cookie_id}"))
    return app.tokens.get(token)


def end_sessions(app, users: set[str]) -> None:
    """Forget every login of these users: their next request needs a new login."""
    for token, user in list(app.tokens.items()):
        if user in users:
            app.tokens.pop(token, None)


def login_page(request: Request) -> Response:
    """Gradio's login page, with the configuration Gradio gives it but no API description."""
    app = request.app
    blocks = app.get_blocks()
    root = get_root_url(request=request, route_path="/",
                        root_path=app.root_path or request.scope.get("root_path") or blocks.custom_mount_path)
    config = {"auth_required": True, "auth_message": blocks.auth_message, "space_id": None, "root": root,
              "page": {"": {"layout": {}}}, "pages": [""], "components": [], "dependencies": [],
              "current_page": ""}
    return templates.TemplateResponse(request=request, name="frontend/index.html",
                                      context={"base_url": "./", "config": config, "gradio_api_info": {}})


async def read_bounded(receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it passes `limit` bytes."""
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            return None
    return body


class RequestGuard:
    """The middleware (see the module's docstring); `users` is the server's UserStore."""

    def __init__(self, app, users: UserStore, max_body_bytes: int = MAX_BODY_BYTES):
        self.app, self.users, self.max_body_bytes = app, users, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(LOOP_API_PREFIX):
            return await self.app(scope, receive, send)
        end_sessions(scope["app"], self.users.changed_users())
        request = Request(scope)
        if scope["path"] == "/" and scope["method"] in ("GET", "HEAD") and logged_in_user(request) is None:
            return await login_page(request)(scope, receive, send)
        body = await read_bounded(receive, self.max_body_bytes)
        if body is None:
            refusal = PlainTextResponse(f"request body over {self.max_body_bytes} bytes", status_code=413)
            return await refusal(scope, receive, send)
        await self.app(scope, replay(body, receive), send)


def replay(body: bytes, receive):
    """A `receive` that gives the body already read, then whatever the client sends next."""
    sent = False

    async def replayed():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return replayed
