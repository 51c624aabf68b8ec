"""Every view of /ui in a real chromium: it loads clean, at 1280 and at 400 px, and does its job."""

from __future__ import annotations

import re

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import TABULAR_FEATURES, Guard, tabular_rows

VIEWS = {
    "models": "Models",
    "score": "Score a file",
    "sample": "Sample",
    "reconstruct": "Reconstruct",
    "latent": "Latent space",
}


@pytest.mark.parametrize("width", [1280, 400])
def test_ui_every_view_loads_without_console_errors(page: Page, guard: Guard, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    for view, heading in VIEWS.items():
        page.goto(f"/ui/#{view}")
        expect(page.get_by_role("heading", level=2, name=heading)).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"#{view} is {overflow} px wider than a {width} px window"
    assert guard.errors == []


def test_ui_models_lists_states_and_refusals(page: Page, guard: Guard, server) -> None:
    page.goto("/ui/")
    for name in ("digits-ae", "digits-rae", "digits-vae", "digits-gan", "digits-broken", "sensors"):
        expect(page.locator("article h3", has_text=name)).to_be_visible()
    broken = page.locator("article", has_text="digits-broken")
    expect(broken.locator(".state")).to_have_text("failed")
    listing = {m["name"]: m for m in server.client.get("/models").json()["models"]}
    reason = listing["digits-broken"]["versions"][0]["reason"]
    expect(broken.locator(".error")).to_have_text(f"Refused: {reason}")  # the service's reason, as given
    ae = page.locator("article", has_text="digits-ae")
    expect(ae).to_contain_text("reconstruction")  # the calibration method
    expect(ae).to_contain_text("10 % flagged on held-out rows")
    # The refused version is not offered in the picker.
    options = page.locator("#model option").all_inner_texts()
    assert len(options) == 5 and not any("broken" in o for o in options)


def grid(page: Page) -> list[str]:
    expect(page.locator("#samples canvas")).to_have_count(12)
    return page.eval_on_selector_all("#samples canvas", "cs => cs.map((c) => c.toDataURL())")


def test_ui_sample_grid_same_seed_same_grid_on_reload(page: Page, guard: Guard) -> None:
    page.goto("/ui/#sample?model=digits-vae@1&n=12&seed=5&temperature=1")
    first = grid(page)
    page.reload()
    assert grid(page) == first
    page.get_by_label("Seed", exact=True).fill("6")
    with page.expect_response("**/sample"):
        page.get_by_role("button", name="Draw").click()
    expect(page).to_have_url(re.compile(r"seed=6"))
    assert grid(page) != first


def test_ui_sample_decodes_typed_latents(page: Page, guard: Guard) -> None:
    page.goto("/ui/#sample?model=digits-gan@1")
    page.get_by_label("Decode these latents").fill("\n".join(",".join(["0"] * 16) for _ in range(3)))
    page.get_by_role("button", name="Decode").click()
    expect(page.locator("#decoded canvas")).to_have_count(3)


@pytest.mark.parametrize(
    "mode,model,steps", [("seeds", "digits-vae", 7), ("rows", "digits-ae", 5), ("seeds", "digits-gan", 3)]
)
def test_ui_interpolation_renders_n_frames(
    page: Page, guard: Guard, digits: np.ndarray, mode: str, model: str, steps: int
) -> None:
    page.goto(f"/ui/#latent?model={model}@1")
    if mode == "rows":
        page.get_by_label("…or paste rows (CSV)").fill("\n".join(",".join(f"{v:g}" for v in r) for r in digits[:2]))
        page.get_by_role("button", name="Use pasted rows").click()
    page.get_by_label("Between").select_option(mode)
    page.get_by_label("Steps").fill(str(steps))
    page.get_by_role("button", name="Interpolate").click()
    expect(page.locator("#frames .frame")).to_have_count(steps)
    frames = page.eval_on_selector_all("#frames canvas", "cs => cs.map((c) => c.toDataURL())")
    assert frames[0] != frames[-1], "the two ends of the interpolation decode to the same image"


def test_ui_reconstruct_shows_pairs(page: Page, guard: Guard, digits: np.ndarray, csv_file) -> None:
    page.goto("/ui/#reconstruct?model=digits-rae@1")
    page.locator("#view input[type=file]").set_input_files(csv_file(digits[:20]))
    expect(page.locator(".pair")).to_have_count(8)  # rows 0-7, the default pick
    page.get_by_label("Rows (e.g. 0-7, 12)").fill("3, 10-11")
    page.get_by_role("button", name="Reconstruct").click()
    expect(page.locator(".pair figcaption")).to_have_text(
        [re.compile(r"^row 3 "), re.compile(r"^row 10 "), re.compile(r"^row 11 ")]
    )


def test_ui_latent_pca_scatter_of_a_file(page: Page, guard: Guard, digits: np.ndarray, csv_file) -> None:
    page.goto("/ui/#latent?model=digits-vae@1")
    page.locator("#view input[type=file]").set_input_files(csv_file(digits[:250]))
    page.get_by_role("button", name="Map the loaded rows").click()
    expect(page.locator("#pca canvas.chart")).to_be_visible()
    expect(page.locator("#pca")).to_contain_text("250 rows; axis 1 holds")
    # 250 rows under a 200-row limit: two /encode and two /anomaly-score requests.
    assert sum(u.endswith("/encode") for u in guard.posts) == 2
    assert sum(u.endswith("/anomaly-score") for u in guard.posts) == 2


def test_ui_tabular_model_tables_bars_and_feature_names(page: Page, guard: Guard, csv_file) -> None:
    x = tabular_rows(60, seed=1)
    x[[5, 40]] = [[10, -20, 8, -8, 8], [-9, 18, 8, 8, -8]]  # far out, and pressure no longer follows temp
    path = csv_file(x)
    page.goto("/ui/#score?model=sensors@1")
    page.locator("#view input[type=file]").set_input_files(path)
    expect(page.locator("#flagged")).to_contain_text("of 60 rows flagged")
    top = page.locator(".top tbody tr")
    assert {int(top.nth(i).locator("td").first.inner_text()) for i in range(2)} == {5, 40}
    assert any(name in top.first.inner_text() for name in TABULAR_FEATURES)  # contributions by feature name
    page.goto("/ui/#sample?model=sensors@1&n=6&seed=2")
    expect(page.locator("#samples tbody tr")).to_have_count(6)
    expect(page.locator("#samples thead th")).to_have_text(["#", *TABULAR_FEATURES])
    page.goto("/ui/#reconstruct?model=sensors@1")
    page.locator("#view input[type=file]").set_input_files(path)
    expect(page.locator("figure.bars canvas")).to_have_count(8)
    page.goto("/ui/#latent?model=sensors@1")
    page.locator("#view input[type=file]").set_input_files(path)
    page.get_by_label("Steps").fill("4")
    page.get_by_role("button", name="Interpolate").click()
    expect(page.locator("#frames tr.frame")).to_have_count(4)
