"""The API key flow in the page, and the offline /docs and /redoc, with and without a key."""

from __future__ import annotations

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import API_KEY, Guard


def test_ui_api_key_asked_once_kept_in_the_tab_only(page: Page, guard: Guard, keyed_server) -> None:
    guard.allow_status(401)
    page.goto(f"{keyed_server.url}/ui/")
    key = page.get_by_label("API key", exact=True)
    expect(key).to_be_focused()
    expect(page.locator("#key-message")).to_contain_text("this endpoint needs the API key")
    key.fill("not-the-key-but-long-enough")
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#key-message")).to_have_text("The key was refused: the API key sent is not valid")
    expect(page.locator(".card")).to_have_count(0)
    key.fill(API_KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("article h3", has_text="digits-ae")).to_be_visible()
    expect(page.locator("#key-panel")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('latentserve.apiKey')") == API_KEY
    assert page.evaluate("localStorage.length") == 0 and "latentserve" not in page.evaluate("document.cookie")
    # A reload in the same tab keeps it; the key travels with the model calls.
    page.reload()
    with page.expect_request("**/sample") as request:
        page.goto(f"{keyed_server.url}/ui/#sample?model=digits-ae@1&seed=1&n=4")
    assert request.value.headers["x-api-key"] == API_KEY
    expect(page.locator("#samples canvas")).to_have_count(4)
    page.get_by_role("button", name="Forget key").click()
    expect(page.get_by_label("API key", exact=True)).to_be_visible()


def test_ui_api_key_not_shared_with_a_new_tab(browser: Browser, keyed_server) -> None:
    context = browser.new_context()
    first = context.new_page()
    first.goto(f"{keyed_server.url}/ui/")
    first.get_by_label("API key", exact=True).fill(API_KEY)
    first.get_by_role("button", name="Use key").click()
    expect(first.locator(".card")).to_have_count(1)
    second = context.new_page()  # session storage belongs to one tab
    second.goto(f"{keyed_server.url}/ui/")
    expect(second.get_by_label("API key", exact=True)).to_be_visible()
    context.close()


def test_docs_renders_operations_offline(page: Page, guard: Guard) -> None:
    page.goto("/docs")
    for path in ("/encode", "/reconstruct", "/sample", "/anomaly-score", "/models"):
        expect(page.locator(".opblock-summary-path", has_text=path).first).to_be_visible()
    page.goto("/redoc")
    expect(page.get_by_role("heading", name="Anomaly Score")).to_be_visible()


def test_docs_behind_the_key_ask_for_it_and_try_it_out_works(page: Page, guard: Guard, keyed_server) -> None:
    guard.allow_status(401)
    page.goto(f"{keyed_server.url}/docs")
    expect(page.locator("#docs-key-message")).to_contain_text("this endpoint needs the API key")
    expect(page.locator(".opblock")).to_have_count(0)
    page.get_by_label("API key", exact=True).fill(API_KEY)
    page.get_by_role("button", name="Use key").click()
    models = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/models")).first
    expect(models).to_be_visible()
    # Try it out: Swagger UI's own request carries the key.
    models.locator(".opblock-summary").click()
    with page.expect_response(lambda r: r.url.endswith("/models")) as response:
        models.get_by_role("button", name="Execute").click()
    assert response.value.status == 200
    expect(models.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
    page.goto(f"{keyed_server.url}/redoc")  # the same tab: the key is known
    expect(page.get_by_role("heading", name="Anomaly Score")).to_be_visible()
