"""Score a file: planted outliers are flagged, the threshold drags, big files go in chunks, CSV out."""

from __future__ import annotations

import re

import numpy as np
from playwright.sync_api import Page, expect

from tests.browser.conftest import Guard, drop


def flagged(page: Page) -> int:
    text = page.locator("#flagged").inner_text()
    match = re.match(r"(\d+) of (\d+) rows flagged", text)
    assert match, text
    return int(match.group(1))


def test_ui_score_dropped_csv_flags_planted_outliers(page: Page, guard: Guard, planted, csv_file) -> None:
    x, outliers = planted
    page.goto("/ui/#score?model=digits-ae@1")
    expect(page.locator(".drop")).to_be_visible()
    drop(page, ".drop", "planted.csv", csv_file(x).read_bytes())
    expect(page.locator("#flagged")).to_contain_text("of 300 rows flagged")
    expect(page.locator("#view")).to_contain_text("Scored 300 of 300 rows")
    # 300 rows, 200 at most per request: two requests, with explain for the contributions.
    assert sum(u.endswith("/anomaly-score") for u in guard.posts) == 2
    top = page.locator(".top tbody tr")
    first = [int(top.nth(i).locator("td").first.inner_text()) for i in range(len(outliers))]
    assert sorted(first) == outliers, "the planted rows are not the highest scores"
    assert re.search(r"x\d+ \d", top.first.locator("td").last.inner_text()), "no per-feature contributions"


def test_ui_score_dragging_the_threshold_changes_the_count(page: Page, guard: Guard, planted, csv_file) -> None:
    x, outliers = planted
    page.goto("/ui/#score?model=digits-ae@1")
    page.locator("#view input[type=file]").set_input_files(csv_file(x))
    expect(page.locator("#flagged")).to_be_visible()
    served = flagged(page)
    assert served >= len(outliers)
    box = page.locator("canvas.chart").bounding_box()
    assert box is not None
    # Drag from the threshold line (red, at the served threshold) to the far left, then the far right.
    line = page.evaluate(
        """() => {
            const c = document.querySelector('canvas.chart'); const s = document.getElementById('threshold');
            const t = (s.value - c.dataset.lo) / (c.dataset.hi - c.dataset.lo);
            return (44 + t * (c.width - 56)) / c.width;
        }"""
    )
    x_line = box["x"] + line * box["width"]
    y = box["y"] + box["height"] / 2
    page.mouse.move(x_line, y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.1 * box["width"], y, steps=5)
    page.mouse.up()
    expect(page.locator("#flagged")).not_to_contain_text(f"{served} of 300")
    assert flagged(page) > served
    page.mouse.move(box["x"] + 0.1 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, y, steps=5)
    page.mouse.up()
    expect(page.locator("#flagged")).not_to_contain_text(f"{served} of 300")
    assert flagged(page) < served  # the chart's right edge: past the 99th percentile of the file's scores
    # The keyboard moves it too (the slider beside the chart).
    page.get_by_role("button", name="Back to the served threshold").click()
    expect(page.locator("#flagged")).to_contain_text(f"{served} of 300 rows flagged")
    page.get_by_label("Threshold (drag").focus()
    page.keyboard.press("Home")
    expect(page.locator("#flagged")).to_contain_text("300 of 300 rows flagged")
    page.keyboard.press("End")  # the slider reaches the highest score
    expect(page.locator("#flagged")).to_contain_text("0 of 300 rows flagged")


def test_ui_score_download_is_the_scored_rows(page: Page, guard: Guard, planted, csv_file) -> None:
    x, outliers = planted
    page.goto("/ui/#score?model=digits-ae@1")
    page.locator("#view input[type=file]").set_input_files(csv_file(x, header=False))
    expect(page.locator("#flagged")).to_be_visible()
    with page.expect_download() as info:
        page.get_by_role("button", name="Download scored rows (CSV)").click()
    lines = open(info.value.path()).read().splitlines()
    assert (
        lines[0].startswith("# threshold ")
        and lines[1] == "row,score,percentile,is_anomaly_served,flagged_at_threshold"
    )
    rows = [line.split(",") for line in lines[2:]]
    assert [int(r[0]) for r in rows] == list(range(300))
    scores = np.array([float(r[1]) for r in rows])
    assert set(np.argsort(-scores)[: len(outliers)]) == set(outliers)
    assert sum(r[4] == "true" for r in rows) == flagged(page)


def test_ui_score_npy_file(page: Page, guard: Guard, planted, tmp_path) -> None:
    x, outliers = planted
    path = tmp_path / "planted.npy"
    np.save(path, x.astype(np.float64))
    page.goto("/ui/#score?model=digits-vae@1")
    page.locator("#view input[type=file]").set_input_files(path)
    expect(page.locator("#flagged")).to_contain_text("of 300 rows flagged")
    top = page.locator(".top tbody tr")
    assert {int(top.nth(i).locator("td").first.inner_text()) for i in range(len(outliers))} == set(outliers)
