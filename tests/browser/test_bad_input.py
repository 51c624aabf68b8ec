"""Bad input in the page: a message naming the problem and nothing sent; service errors verbatim."""

from __future__ import annotations

import io

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import MAX_ROWS, Guard, drop, write_csv


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=True)
    return buf.getvalue()


def _csv(x: np.ndarray, tmp_path) -> bytes:  # noqa: ANN001
    return write_csv(tmp_path / "rows.csv", x).read_bytes()


BAD = {
    "wrong width": (
        lambda d, t: _csv(d[:10, :63], t),
        "rows.csv has 63 columns; digits-ae version 1 expects 64 features",
    ),
    "ragged": (lambda d, t: b"1,2,3\n4,5\n", "line 2 of rows.csv has 2 columns, the first line has 3"),
    "text cell": (
        lambda d, t: _csv(d[:5], t).replace(b"\n0,", b"\nzero,", 1),
        'line 2, column 1 of rows.csv is "zero", not a number',
    ),
    "nan cell": (
        lambda d, t: _csv(d[:5], t).replace(b"\n0,", b"\nnan,", 1),
        'line 2, column 1 of rows.csv is "nan", not a finite number',
    ),
    "beyond float32": (
        lambda d, t: _csv(d[:5], t).replace(b"\n0,", b"\n1e39,", 1),
        "line 2, column 1 of rows.csv is 1e39, beyond float32's range",
    ),
    "empty": (lambda d, t: b"", "rows.csv is empty"),
    "header only": (lambda d, t: b"a,b,c\n", "rows.csv has a header but no rows"),
    "object npy": (lambda d, t: _npy(np.array([[1, "a"]], dtype=object)), "holds |O values; numeric dtypes only"),
    "3-d npy": (lambda d, t: _npy(np.zeros((2, 8, 8))), "has shape (2, 8, 8); a table of rows"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_ui_score_bad_file_is_named_and_nothing_sent(page: Page, guard: Guard, digits, tmp_path, case: str) -> None:
    make, message = BAD[case]
    name = "rows.npy" if "npy" in case else "rows.csv"
    page.goto("/ui/#score?model=digits-ae@1")
    expect(page.locator(".drop")).to_be_visible()
    drop(page, ".drop", name, make(digits, tmp_path))
    expect(page.locator("#view .error")).to_contain_text(message)
    expect(page.locator("#view")).to_contain_text("Nothing was sent.")
    assert guard.posts == []


def test_ui_reconstruct_over_the_row_limit_sends_nothing(page: Page, guard: Guard, digits, csv_file) -> None:
    page.goto("/ui/#reconstruct?model=digits-ae@1")
    page.locator("#view input[type=file]").set_input_files(csv_file(digits[:300]))
    expect(page.locator(".pair")).to_have_count(8)
    sent = len(guard.posts)
    page.get_by_label("Rows (e.g. 0-7, 12)").fill("0-299")
    page.get_by_role("button", name="Reconstruct").click()
    expect(page.locator("#view .error")).to_contain_text("more than 64 rows picked")
    page.get_by_label("Rows (e.g. 0-7, 12)").fill("300")
    page.get_by_role("button", name="Reconstruct").click()
    expect(page.locator("#view .error")).to_contain_text("row 300 does not exist: the data has rows 0 to 299")
    assert len(guard.posts) == sent


def test_ui_decode_box_over_the_row_limit_sends_nothing(page: Page, guard: Guard) -> None:
    page.goto("/ui/#sample?model=digits-vae@1")
    page.get_by_label("Decode these latents").fill("\n".join(["0 " * 16] * (MAX_ROWS + 1)))
    page.get_by_role("button", name="Decode").click()
    expect(page.locator("#view .error")).to_contain_text(
        f"the latents box has {MAX_ROWS + 1} lines; the service takes at most {MAX_ROWS}"
    )
    page.get_by_label("Decode these latents").fill("1,2,3")
    page.get_by_role("button", name="Decode").click()
    expect(page.locator("#view .error")).to_contain_text(
        "the latents box has 3 values per line; digits-vae has 16 latent dimensions"
    )
    assert guard.posts == []


def test_ui_service_error_is_shown_verbatim(page: Page, guard: Guard, server) -> None:
    # The page leaves the temperature's upper bound to the service, which answers 422.
    expected = server.client.post("/sample", json={"model": "digits-vae", "n": 4, "seed": 0, "temperature": 2000000})
    assert expected.status_code == 422
    guard.allow_status(422)
    page.goto("/ui/#sample?model=digits-vae@1")
    page.get_by_label("Temperature").fill("2000000")
    page.get_by_label("How many").fill("4")
    page.get_by_role("button", name="Draw").click()
    expect(page.locator("#view .error")).to_have_text(f"422 {expected.json()['error']}")
    expect(page.locator("#samples canvas")).to_have_count(0)
    assert "null" not in page.locator("#view .messages").first.inner_text()
