"""The Gradio 6 page: builds the Blocks around a `LabelingService` and launches it.

The whole item (prompt, completions, rank pickers or the two clips) is one HTML block
rendered by `handlers.render_item` with every text escaped; a small page script shows the
buttons that fit the item (A/B/tie for pairs and clips, "best" buttons for best-of-K,
"submit ranking" for rankings) and maps keys to them. So a vote's response carries three
values, not one update per widget: Gradio builds a new component for every update it
sends, and that would dominate the round trip.

Who is asking always comes from the login (`gr.Request.username`), never from the page.
Every view sends a token of what it shows (item and display order, `handlers.shown_token`)
into a hidden box, and every answer sends it back: the storage takes the answer only for
the item leased to that annotator in that order, so one annotator cannot vote as, or read
the votes of, another, and a re-sent answer cannot land on an item nobody has seen.

Before Gradio sees a request it passes `guard.RequestGuard` (sessions of removed users
end, bodies are bounded, the login page reveals nothing); clips and exports are served by
the routes of `files.py`, not by Gradio's file routes.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import html  # noqa: E402
import warnings  # noqa: E402

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from . import active  # noqa: E402
from .admin import report, summary_markdown  # noqa: E402
from .api import add_loop_api  # noqa: E402
from .config import ProjectConfig  # noqa: E402
from .export import FORMATS  # noqa: E402
from .files import add_file_routes  # noqa: E402
from .guard import RequestGuard  # noqa: E402
from .handlers import LabelingService, View, escape_markdown  # noqa: E402
from .sources import MAX_K, load_items  # noqa: E402
from .storage import open_storage  # noqa: E402
from .users import UserStore  # noqa: E402

KEYS_HELP = (
    "**Keys:** <kbd>←</kbd> A better · <kbd>→</kbd> B better · <kbd>↓</kbd> tie · <kbd>c</kbd> can't tell · "
    "<kbd>s</kbd> skip · <kbd>1</kbd>–<kbd>9</kbd> best completion (best-of-K). "
    "**Rankings:** <kbd>Tab</kbd> to each rank picker, type its rank (1 = best; equal ranks are a tie), "
    "<kbd>Enter</kbd> submits. Keys are ignored while typing a comment."
)

# 1. Show the buttons that fit the item on screen (its data-mode / data-k attributes).
# 2. Gradio buttons have no hotkeys: a keydown listener clicks the visible button instead
#    (keydown, not keypress, which never sees the arrow keys).
HEAD = """
<script>
(() => {
  const keys = {ArrowLeft: "vote-a", ArrowRight: "vote-b", ArrowDown: "vote-tie",
                c: "vote-cant-tell", s: "vote-skip", Enter: "rank-submit"};
  for (let i = 1; i <= 9; i++) keys[String(i)] = "best-" + i;
  const show = (id, on) => { const el = document.getElementById(id); if (el) el.style.display = on ? "" : "none"; };
  let shown = null;
  function applyLayout() {
    const view = document.querySelector("#content .item-view");
    if (!view) return;
    const mode = view.dataset.mode, k = Number(view.dataset.k || 0);
    const key = mode + ":" + k + ":" + (document.getElementById("vote-a") ? 1 : 0);
    if (key === shown) return;
    shown = key;
    document.body.dataset.labelMode = mode;
    for (const id of ["vote-a", "vote-b", "vote-tie"]) show(id, mode === "pair" || mode === "clip");
    for (const id of ["vote-cant-tell", "vote-skip"]) show(id, mode !== "done");
    show("rank-submit", mode === "ranking");
    for (let i = 1; i <= 9; i++) show("best-" + i, mode === "best_of_k" && i <= k);
  }
  new MutationObserver(applyLayout).observe(document.documentElement, {childList: true, subtree: true});
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const t = event.target;
    if (t && t.tagName === "SELECT") {  // a rank picker: its own keys, except Enter submits
      if (event.key !== "Enter") return;
    } else if (t && (t.tagName === "TEXTAREA" || t.isContentEditable ||
               (t.tagName === "INPUT" && !["radio", "checkbox", "button"].includes(t.type)))) {
      return;  // typing a comment
    }
    const id = keys[event.key.length === 1 ? event.key.toLowerCase() : event.key];
    const button = id && document.getElementById(id);
    if (!button || button.offsetParent === null || button.disabled) return;
    event.preventDefault();
    button.click();
  });
})();
</script>
"""

# The rank pickers are plain <select>s inside the item HTML; this collects them on submit.
COLLECT_RANKS = """(shown, ranks, comment) => [shown,
  Array.from(document.querySelectorAll('#content .rank-select')).map((s) => s.value).join(','), comment]"""

CSS = """
.item-view .side-by-side { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.completion, .prompt { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px; margin-bottom: 8px; }
.completion .content, .prompt .content { white-space: pre-wrap; overflow-wrap: anywhere; font-family: var(--font-mono); }
.slot-title { font-weight: bold; margin-bottom: 4px; }
.turn .role { font-size: 0.8em; text-transform: uppercase; opacity: 0.7; margin-top: 6px; }
.kway-slot { display: flex; gap: 10px; align-items: flex-start; }
.kway-slot .completion { flex: 1; }
.rank-pick select { font-size: 1.1em; padding: 4px; margin-top: 10px; }
.clip video { width: 100%; max-height: 360px; background: #000; }
"""


# =====================================================================================
# Building the service: everything that can fail does so here, before any server starts
# =====================================================================================

def prepare(config: ProjectConfig) -> LabelingService:
    items = load_items(config)
    users = UserStore(config.users)
    storage = open_storage(config)
    storage.sync_items(items, active.priorities(config, items))
    return LabelingService(storage, users)


# =====================================================================================
# The page
# =====================================================================================

def build_demo(service: LabelingService, config: ProjectConfig, concurrency: int = 8) -> gr.Blocks:
    with gr.Blocks(title=f"Labelling: {config.name}", analytics_enabled=False) as demo:
        gr.Markdown(f"## {escape_markdown(config.name)}\n{escape_markdown(config.guidelines)}\n\n{KEYS_HELP}",
                    elem_id="help")
        with gr.Tab("Label"):
            status = gr.Markdown(elem_id="status")
            content = gr.HTML(elem_id="content", js_on_load=None)
            with gr.Row():
                a_button = gr.Button("A better (←)", elem_id="vote-a")
                b_button = gr.Button("B better (→)", elem_id="vote-b")
                tie_button = gr.Button("Tie (↓)", elem_id="vote-tie")
                rank_button = gr.Button("Submit ranking (Enter)", variant="primary", elem_id="rank-submit")
                best_buttons = [gr.Button(f"Best: {i + 1}", elem_id=f"best-{i + 1}", min_width=60)
                                for i in range(MAX_K)]
            with gr.Row():
                cant_button = gr.Button("Can't tell (c)", elem_id="vote-cant-tell")
                skip_button = gr.Button("Skip (s)", elem_id="vote-skip", variant="secondary")
            comment = gr.Textbox(label="Comment (optional)", lines=1, max_lines=4, elem_id="comment")
            ranks_box = gr.Textbox(visible=False)  # filled from the rank pickers by COLLECT_RANKS
            shown_box = gr.Textbox(visible=False)  # what the view shows; every answer sends it back

        with gr.Tab("Admin", visible=False) as admin_tab:
            admin_summary = gr.Markdown()
            refresh_button = gr.Button("Refresh", elem_id="admin-refresh")
            annotator_table = gr.Dataframe(headers=["annotator", "votes", "skips", "median s"], label="Per annotator",
                                           interactive=False)
            item_table = gr.Dataframe(headers=["item", "mode", "votes", "overlap", "status"], label="Per item",
                                      interactive=False)
            distribution_table = gr.Dataframe(headers=["label", "count"], label="Label distribution",
                                              interactive=False)
            gr.HTML(" · ".join(f'<a id="export-{fmt}" href="labeling/export/{fmt}" download>Export {fmt}</a>'
                               for fmt in FORMATS), elem_id="exports")  # files.py: admins only

        view_outputs = [shown_box, status, content, comment]

        def show(view: View) -> list:
            return [view.shown, view.status, view.html, view.comment]

        def user_of(request: gr.Request) -> str:
            if request is None or not request.username:
                raise gr.Error("Log in first.")
            return request.username

        def on_load(request: gr.Request):
            user = user_of(request)
            return show(service.current(user)) + [gr.update(visible=service.is_admin(user))]

        def make_answer(key: str):
            def answer(shown, comment_text, request: gr.Request):
                return show(service.answer(user_of(request), shown, key, comment=comment_text))
            answer.__name__ = f"answer_{key}"
            return answer

        def submit_ranking(shown, ranks, comment_text, request: gr.Request):
            return show(service.answer(user_of(request), shown, "rank", ranks or "", comment_text))

        queue_kwargs = dict(concurrency_id="labeling", concurrency_limit=concurrency, show_progress="hidden")
        demo.load(on_load, None, view_outputs + [admin_tab], api_name="current", **queue_kwargs)
        for button, key, name in ((a_button, "A", "vote_a"), (b_button, "B", "vote_b"), (tie_button, "tie", "vote_tie"),
                                  (cant_button, "cant_tell", "cant_tell"), (skip_button, "skip", "skip")):
            button.click(make_answer(key), [shown_box, comment], view_outputs, api_name=name, **queue_kwargs)
        for i, button in enumerate(best_buttons):
            button.click(make_answer(f"best:{i + 1}"), [shown_box, comment], view_outputs,
                         api_name=f"best_{i + 1}", **queue_kwargs)
        rank_button.click(submit_ranking, [shown_box, ranks_box, comment], view_outputs, api_name="rank",
                          js=COLLECT_RANKS, **queue_kwargs)

        # -- admin: every handler checks the admin flag itself; hiding the tab is not security
        def require_admin(request: gr.Request) -> None:
            if not service.is_admin(user_of(request)):
                raise gr.Error("Admins only.", print_exception=False)

        def refresh(request: gr.Request):
            require_admin(request)
            data = report(service.storage)
            return (summary_markdown(data), data["annotators"], data["items_table"],
                    [[label, count] for label, count in data["distribution"]])

        admin_outputs = [admin_summary, annotator_table, item_table, distribution_table]
        refresh_button.click(refresh, None, admin_outputs, api_name="admin_report", api_visibility="undocumented")
        admin_tab.select(refresh, None, admin_outputs, api_visibility="private")
    return demo


# =====================================================================================
# Serving
# =====================================================================================

def private_files(config: ProjectConfig) -> list[str]:
    """Files no Gradio URL may serve, whatever Gradio allows by default (defence in depth:
    the app gives Gradio no folder to serve; clips go through files.py)."""
    database = str(config.db_path)
    files = [database, database + "-wal", database + "-shm", database + "-journal", str(config.audit_path),
             str(config.users)]
    if config.api_token_file is not None:
        files.append(str(config.api_token_file))
    return files


def launch(config: ProjectConfig, host: str = "127.0.0.1", port: int | None = None, block: bool = True,
           concurrency: int = 8, quiet: bool = False, service: LabelingService | None = None):
    """Prepare (unless a prepared `service` is given), build and launch behind the request
    guard, add the clip and export routes and, with an API token in the config, the loop
    API (api.py). Returns (demo, service, local_url); with `block` it returns only when the
    server stops."""
    service = service or prepare(config)
    demo = build_demo(service, config, concurrency=concurrency)
    demo.queue(default_concurrency_limit=concurrency)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # never blocks here: the loop API is added to the running app first
        _, url, _ = demo.launch(
            server_name=host, server_port=port, share=False, auth=service.users.verify,
            # Gradio shows the login message as HTML
            auth_message=f"Labelling project '{html.escape(config.name)}': log in with your annotator account.",
            prevent_thread_lock=True, quiet=quiet, show_error=True, run_history=False,
            blocked_paths=private_files(config),
            app_kwargs={"middleware": [Middleware(RequestGuard, users=service.users)]},
            head=HEAD, css=CSS, footer_links=[], enable_monitoring=False, mcp_server=False,
        )
    add_file_routes(demo.app, service, config)
    if config.api_token_file is not None:
        add_loop_api(demo.app, service, config)
    if block:
        demo.block_thread()
    return demo, service, url
