"""Latency of one vote round trip in the labelling app: submit a vote and get the next item.

    GRADIO_ANALYTICS_ENABLED=False python benchmarks/labeling_latency.py [--votes 50] [--think 0]

Starts an in-process server on a free 127.0.0.1 port with a throw-away project, then runs
three scenarios, each annotator logging in and voting `--votes` times, and prints
p50 / p95 / max of the round trip:

- 1 annotator voting back to back;
- 20 concurrent annotators, each pausing a random 0..2*THINK seconds between votes
  (``--think``, default 1 s: faster than people read two answers) -- the target scenario;
- 20 concurrent annotators voting back to back with no pause (saturation: a closed loop
  whose latency is 20 / throughput, shown for capacity planning). Each annotator speaks Gradio's queue protocol
over one kept-alive HTTP connection, as a browser tab does (POST /gradio_api/queue/join,
then read the event stream until the result). The annotators run in a second process, as
browsers would, so they do not compete with the server for Python's GIL. `--client gradio_client` measures through `gradio_client` instead (which opens a new
connection per call, so it mostly measures itself).

Target: p95 under 100 ms with 20 annotators. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="labeling-bench-gradio-"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labeling_app.http_client import HttpSession  # noqa: E402

PASSWORD = "benchmark-password"
VOTE_ENDPOINTS = ["vote_a", "vote_b", "vote_tie"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(root: Path, annotators: list[str], items: int, overlap: int) -> Path:
    from labeling_app.users import add_user

    with open(root / "items.jsonl", "w", encoding="utf-8") as handle:
        for i in range(items):
            handle.write(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: which answer is better?",
                                     "completions": [f"First answer to {i}. " * 20, f"Second answer to {i}. " * 20]})
                         + "\n")
    for name in annotators:
        add_user(root / "users.json", name, PASSWORD, n=2**10)  # cheap hashes: logins are not measured
    config = root / "bench.yaml"
    config.write_text("name: latency-benchmark\nsources: [{type: jsonl, path: items.jsonl}]\n"
                      f"overlap: {overlap}\nstorage: store\nusers: users.json\n", encoding="utf-8")
    return config


class BrowserLikeClient(HttpSession):
    """One annotator's page (a kept-alive connection). A vote sends back the token of the
    view it answers (the view's first output) and an empty comment."""

    def __init__(self, url: str, user: str):
        super().__init__(url, user, PASSWORD, timeout=60)
        self.shown = ""

    def call(self, api_name: str):
        inputs = (self.shown, "") if api_name.startswith("vote") else ()
        outputs = super().call(api_name, *inputs)
        self.shown = outputs[0]
        return outputs


class GradioClient:
    def __init__(self, url: str, user: str):
        from gradio_client import Client

        self.client = Client(url, auth=(user, PASSWORD), verbose=False, analytics_enabled=False, ssl_verify=False)
        self.shown = ""

    def call(self, api_name: str):
        inputs = (self.shown, "") if api_name.startswith("vote") else ()
        outputs = self.client.predict(*inputs, api_name=f"/{api_name}")
        self.shown = outputs[0]
        return outputs


def run(url: str, users: list[str], votes: int, think: float, client_kind: str) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    ready = threading.Barrier(len(users))

    def annotate(user: str):
        try:
            client = (BrowserLikeClient if client_kind == "http" else GradioClient)(url, user)
            client.call("current")
            rng = random.Random(user)
            ready.wait(timeout=120)  # everyone starts voting together
            for _ in range(votes):
                if think:
                    time.sleep(rng.uniform(0, 2 * think))
                start = time.perf_counter()
                client.call(rng.choice(VOTE_ENDPOINTS))
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
        except BaseException as err:  # reported after the run
            errors.append(err)
            ready.abort()

    threads = [threading.Thread(target=annotate, args=(u,), daemon=True) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    if errors:
        raise errors[0]
    return latencies


def run_elsewhere(*args) -> list[float]:
    """`run` in a fresh process (spawned: it imports httpx, not the server)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(run, args)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=50, help="votes per annotator (default 50)")
    parser.add_argument("--think", type=float, default=1.0, help="mean pause between votes, paced scenario (s)")
    parser.add_argument("--annotators", type=int, default=20, help="concurrent annotators (default 20)")
    parser.add_argument("--no-saturation", action="store_true", help="skip the back-to-back concurrent run")
    parser.add_argument("--client", choices=("http", "gradio_client"), default="http")
    parser.add_argument("--server-concurrency", type=int, default=8, help="the app's --concurrency")
    args = parser.parse_args(argv)

    from labeling_app.app import launch
    from labeling_app.config import load_config

    top = args.annotators
    annotators = [f"bench{i:02d}" for i in range(top)]
    scenarios = [("1 annotator, back to back", 1, 0.0),
                 (f"{top} annotators, pause 0..{2 * args.think:g} s", top, args.think)]
    if not args.no_saturation:
        scenarios.append((f"{top} annotators, back to back (saturation)", top, 0.0))
    results = {}
    with tempfile.TemporaryDirectory(prefix="labeling-bench-") as tmp:
        config = load_config(make_project(Path(tmp), annotators, items=top * args.votes * len(scenarios),
                                          overlap=2))
        demo, service, url = launch(config, port=free_port(), block=False, quiet=True,
                                    concurrency=args.server_concurrency)
        try:
            for label, n, think in scenarios:
                latencies = run_elsewhere(url, annotators[:n], args.votes, think, args.client)
                results[label] = latencies
                ms = [x * 1000 for x in latencies]
                print(f"{label:<45} {len(ms):>5} votes: p50 {percentile(ms, 50):6.1f} ms   "
                      f"p95 {percentile(ms, 95):6.1f} ms   max {max(ms):6.1f} ms   "
                      f"mean {statistics.mean(ms):6.1f} ms", flush=True)
        finally:
            demo.close()
            service.storage.close()
    p95 = percentile([x * 1000 for x in results[scenarios[1][0]]], 95)
    print(f"target p95 < 100 ms with {top} paced annotators: {'met' if p95 < 100 else 'NOT met'} ({p95:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
