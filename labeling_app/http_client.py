"""A scripted annotator over plain HTTP, talking to the app as a browser tab does: a login
cookie, a session hash, POST /gradio_api/queue/join and the event stream.

Tests use it to vote without a browser, and `benchmarks/labeling_latency.py` to time
votes as a page sees them (gradio_client adds its own overhead). No library offers this
for Gradio's queue protocol with cookie login, so it is written here. Every call has a
timeout, so a dead server fails fast instead of hanging."""

from __future__ import annotations

import json
import uuid


class HttpSession:
    """One annotator's page; ``call(api_name)`` runs an endpoint and returns its outputs."""

    def __init__(self, url: str, user: str, password: str, timeout: float = 20):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.http.post("/login", data={"username": user, "password": password}).raise_for_status()
        dependencies = self.http.get("/config").json()["dependencies"]
        self.fn_index = {d.get("api_name"): i for i, d in enumerate(dependencies)}
        self.n_inputs = {d.get("api_name"): len(d["inputs"]) for d in dependencies}
        self.session = uuid.uuid4().hex

    def call(self, api_name: str, last_input=None) -> list:
        """State inputs are kept server-side (the page sends null for them, as here);
        ``last_input`` is the endpoint's last input (a vote's comment)."""
        data = [None] * self.n_inputs[api_name]
        if data:
            data[-1] = last_input
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
