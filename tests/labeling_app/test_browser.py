"""A real browser (Playwright driving Debian's Chromium) labels text pairs by keyboard,
ranks a K = 4 item, watches a clip pair, and the export holds those votes in true order.
Screenshots go to test-artifacts/labeling_app/."""

from __future__ import annotations

import json
import pytest
import os
import tempfile
from pathlib import Path

from labeling_testkit import ARTIFACTS, PASSWORD, make_project

from labeling_app.export import main as export_main

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]
SCRIPT = "<script>window.__xss = 1</script>"
IMG = '<img src="x" onerror="window.__xss = 2">'
ROWS = [
    {"id": "xss", "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi <b>now</b>"}],
     "completions": [f"PREFERRED hi {SCRIPT}", f"other hi {IMG}"]},
    {"id": "plain", "prompt": "Name a colour.", "completions": ["PREFERRED blue", "other green"]},
    {"id": "k4", "prompt": "Rank the animals by size.",
     "completions": ["alpha elephant", "beta horse", "gamma cow", "delta mouse"]},
]
# the ranks the annotator gives, by text (1 = best; beta and gamma tie; 4 skips 3: ranks are made dense)
GIVEN_RANKS = {"alpha": "1", "beta": "2", "gamma": "2", "delta": "4"}


@pytest.mark.slow
def test_label_in_a_real_browser(tmp_path, server_factory):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium is needed: apt-get install -y chromium"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    config = make_project(tmp_path / "p", ROWS, clips=1, users=("alice",))
    server = server_factory(config)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                             env={**os.environ, "HOME": tempfile.mkdtemp(prefix="chromium-home-")})
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(server.url)
            page.get_by_label("username").fill("alice")
            page.get_by_label("password").fill(PASSWORD)
            page.get_by_role("button", name="Login").click()
            status = page.locator("#status")
            expect(status).to_contain_text("Item xss ·")

            # markup inside completions is shown as text and never runs
            content = page.locator("#content")
            expect(content).to_contain_text(SCRIPT)
            expect(content).to_contain_text(IMG)
            expect(content).to_contain_text("Say hi <b>now</b>")
            assert content.locator("img, script, b").count() == 0
            assert page.evaluate("window.__xss") is None
            page.screenshot(path=str(ARTIFACTS / "1-text-pair-xss.png"), full_page=True)

            def vote_for_preferred(next_item: str):
                first = content.locator(".completion").nth(0).inner_text()
                page.locator("#status").click()  # focus the page, not the comment box
                page.keyboard.press("ArrowLeft" if "PREFERRED" in first else "ArrowRight")
                expect(status).to_contain_text(next_item)

            vote_for_preferred("Item plain ·")
            vote_for_preferred("Item k4 ·")
            assert page.evaluate("window.__xss") is None

            # rank K = 4: the A/B buttons give way to rank pickers and a submit button
            expect(page.locator("#rank-submit")).to_be_visible()
            expect(page.locator("#vote-a")).to_be_hidden()
            selects = content.locator(".rank-select")
            expect(selects).to_have_count(4)
            slots = content.locator(".kway-slot")
            for i in range(4):
                word = slots.nth(i).locator(".content").inner_text().split()[0]
                if i % 2 == 0:  # by keyboard: focus the picker, type the rank
                    selects.nth(i).focus()
                    page.keyboard.press(GIVEN_RANKS[word])
                else:  # by mouse
                    selects.nth(i).select_option(GIVEN_RANKS[word])
                expect(selects.nth(i)).to_have_value(GIVEN_RANKS[word])
            page.screenshot(path=str(ARTIFACTS / "2-ranking-k4.png"), full_page=True)
            selects.nth(3).focus()
            page.keyboard.press("Enter")  # Enter submits the ranking
            expect(status).to_contain_text("Item clip0 ·")

            # the clip pair: both videos load and loop; then B by keyboard
            page.wait_for_function(
                "() => { const v = [...document.querySelectorAll('#content video')];"
                " return v.length === 2 && v.every((x) => x.readyState >= 2 && x.duration > 0 && x.loop); }")
            expect(page.locator("#vote-a")).to_be_visible()
            clip_b = page.locator("#clip-b").get_attribute("src")
            page.screenshot(path=str(ARTIFACTS / "3-clip-pair.png"), full_page=True)
            page.locator("#status").click()
            page.keyboard.press("ArrowRight")
            expect(status).to_contain_text("Nothing left")
            page.screenshot(path=str(ARTIFACTS / "4-done.png"), full_page=True)
            assert page.get_by_role("tab", name="Admin").count() == 0  # annotators have no admin tab

            # the admin page: progress, agreement, distribution, export
            admin = browser.new_context(viewport={"width": 1280, "height": 1400}).new_page()
            admin.set_default_timeout(30_000)
            admin.goto(server.url)
            admin.get_by_label("username").fill("admin")
            admin.get_by_label("password").fill(PASSWORD)
            admin.get_by_role("button", name="Login").click()
            admin.get_by_role("tab", name="Admin").click()
            expect(admin.get_by_text("4 votes")).to_be_visible()
            expect(admin.get_by_text("Krippendorff's alpha, nominal")).to_be_visible()
            with admin.expect_download() as download:  # a download link, for admins only (files.py)
                admin.locator("#export-core").click()
            assert download.value.suggested_filename == "test-project-core.jsonl"
            admin.screenshot(path=str(ARTIFACTS / "5-admin.png"), full_page=True)
        finally:
            browser.close()

    out = tmp_path / "core.jsonl"
    assert export_main(["--project", str(config), "--format", "core", "--out", str(out)]) == 0
    rows = {r["meta"]["item_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"xss", "plain", "k4", "clip0"}
    assert rows["xss"]["label"] == 1.0 and rows["plain"]["label"] == 1.0  # true item 0 is the PREFERRED one
    assert rows["k4"]["ranks"] == [0, 1, 1, 2]  # alpha, beta, gamma, delta in true order
    assert rows["clip0"]["items"] == ["seg0a", "seg0b"]
    assert rows["clip0"]["label"] == (1.0 if "seg0a" in clip_b else 0.0)
    assert all(r["annotator"] == "alice" and r["meta"]["seconds"] >= 0 for r in rows.values())
    trl = tmp_path / "trl.jsonl"
    assert export_main(["--project", str(config), "--format", "trl", "--out", str(trl)]) == 0
    chosen = {r["item_id"]: r["chosen"] for r in map(json.loads, trl.read_text().splitlines()) if "item_id" in r}
    assert chosen["xss"].startswith("PREFERRED") and chosen["plain"].startswith("PREFERRED")
