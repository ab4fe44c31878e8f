"""Clients of a running labelling app over plain HTTP.

- `HttpSession`: a scripted annotator, talking to the app as a browser tab does: a login
  cookie, a session hash, POST /gradio_api/queue/join and the event stream. Tests use it
  to vote without a browser, the bots of `annotate.py` to label, and
  `benchmarks/labeling_latency.py` to time votes as a page sees them (gradio_client adds
  its own overhead). No library offers this for Gradio's queue protocol with cookie
  login, so it is written here.
- `AdminClient`: the live loop's parts (reward, policy) talking to the loop API of
  `api.py` with the admin token: add items, read new votes, report a heartbeat.

Every call has a timeout, so a dead server fails fast instead of hanging."""

from __future__ import annotations

import json
import uuid

import httpx


class HttpSession:
    """One annotator's page; ``call(api_name, *inputs)`` runs an endpoint and returns its outputs."""

    def __init__(self, url: str, user: str, password: str, timeout: float = 20):
        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.http.post("/login", data={"username": user, "password": password}).raise_for_status()
        dependencies = self.http.get("/config").json()["dependencies"]
        self.fn_index = {d.get("api_name"): i for i, d in enumerate(dependencies)}
        self.n_inputs = {d.get("api_name"): len(d["inputs"]) for d in dependencies}
        self.session = uuid.uuid4().hex

    def call(self, api_name: str, *inputs) -> list:
        """Run an endpoint with its inputs. An answer's first input is the `shown` token of
        the view it answers (the first output of every view), then the ranks for ``rank``,
        then the comment."""
        if len(inputs) != self.n_inputs[api_name]:
            raise TypeError(f"{api_name} takes {self.n_inputs[api_name]} inputs, got {len(inputs)}")
        data = list(inputs)
        joined = self.http.post("/gradio_api/queue/join", json={
            "data": data, "fn_index": self.fn_index[api_name], "session_hash": self.session,
            "event_data": None, "trigger_id": None})
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                        if not message.get("success"):
                            raise RuntimeError(f"{api_name} failed: {message.get('output')}")
                        return message["output"]["data"]
        raise RuntimeError(f"{api_name}: the stream ended without a result")

    def close(self):
        self.http.close()


class ApiError(RuntimeError):
    """A reply of the loop API other than 2xx: `status` is the HTTP status (401 bad
    token, 400 invalid input, 409 changed item, 413 too large), `message` the server's
    explanation."""

    def __init__(self, status: int, message: str, url: str):
        super().__init__(f"{url}: HTTP {status}: {message}")
        self.status, self.message, self.url = status, message, url


class AdminClient:
    """The loop API of a labelling app (see api.py), with the admin token.

    Network failures raise httpx's own errors (a timeout, a refused connection): only
    the server's answers become `ApiError`."""

    def __init__(self, url: str, token: str, timeout: float = 10):
        self.http = httpx.Client(base_url=url, timeout=timeout, headers={"Authorization": f"Bearer {token}"})

    def add_items(self, items: list[dict], priorities: dict[str, float] | None = None) -> dict:
        """Offer items to the annotators: ``{"added": [ids], "existing": [ids]}``."""
        return self._request("POST", "/loop/api/items", json={"items": items, "priorities": priorities or {}})

    def votes(self, after: int = 0, limit: int = 1000) -> dict:
        """Votes with ids above `after`: ``{"votes": [...], "last_id": n}``; pass `last_id`
        as the next `after` to read each vote once."""
        return self._request("GET", "/loop/api/votes", params={"after": after, "limit": limit})

    def status(self) -> dict:
        """Counts of items, open items, votes and annotators, and the parts' heartbeats."""
        return self._request("GET", "/loop/api/status")

    def heartbeat(self, part: str, state: dict) -> dict:
        """Report a loop part's state (shown on the admin page and in `status`)."""
        return self._request("POST", "/loop/api/heartbeat", json={"part": part, "state": state})

    def _request(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, path, **kwargs)
        if not response.is_success:
            raise ApiError(response.status_code, _error_text(response), str(response.url))
        return response.json()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "AdminClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _error_text(response: httpx.Response) -> str:
    """The API's ``{"error": ...}``, or the raw body of any other reply (a proxy's page)."""
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:500]
