"""Regenerate docs/ui/*.png: one screenshot of each view, against a running server.

    latentserve serve --models model_repository --port 8000 &
    python -m tests.browser.screenshots --url http://127.0.0.1:8000 --out docs/ui

The data (digits with five rows of pixel noise planted) is made here, not read from the repository.
Screenshots are quantised to 64 colours to stay small.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright
from sklearn.datasets import load_digits

CHROMIUM = "/usr/bin/chromium"


def _save(png: bytes, path: Path) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=64)
    image.save(path, optimize=True)
    print(f"{path} {path.stat().st_size // 1024} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=Path("docs/ui"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    x = load_digits().data[:400].copy()
    x[[7, 64, 150, 222, 399]] = np.random.default_rng(11).integers(0, 17, size=(5, 64))
    data = args.out / "planted.csv"
    np.savetxt(data, x, delimiter=",", fmt="%g")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{args.url}/ui/#models")
        page.wait_for_selector(".card")
        _save(page.screenshot(), args.out / "models.png")
        page.goto(f"{args.url}/ui/#score?model=digits-vae@1")
        page.set_input_files("#view input[type=file]", data)
        page.wait_for_selector("#flagged")
        page.evaluate("document.querySelector('#view canvas.chart').scrollIntoView()")
        _save(page.screenshot(), args.out / "score.png")
        page.goto(f"{args.url}/ui/#sample?model=digits-vae@1&n=48&seed=7&temperature=1")
        page.wait_for_selector("#samples canvas")
        _save(page.screenshot(), args.out / "sample.png")
        page.goto(f"{args.url}/ui/#reconstruct?model=digits-ae@1")
        page.set_input_files("#view input[type=file]", data)
        page.fill("#view form.controls input", "0-15")
        page.click("#view form.controls button")
        page.wait_for_selector(".pair")
        _save(page.screenshot(), args.out / "reconstruct.png")
        page.goto(f"{args.url}/ui/#latent?model=digits-vae@1")
        page.set_input_files("#view input[type=file]", data)
        page.fill("#interpolate input[type=number] >> nth=2", "12")
        page.click("#interpolate button")
        page.wait_for_selector(".frame")
        page.click("text=Map the loaded rows")
        page.wait_for_selector("#pca canvas")
        page.evaluate("document.querySelector('#interpolate').scrollIntoView()")
        _save(page.screenshot(), args.out / "latent.png")
        page.set_viewport_size({"width": 400, "height": 860})
        page.goto(f"{args.url}/ui/#score?model=digits-vae@1")
        page.set_input_files("#view input[type=file]", data)
        page.wait_for_selector("#flagged")
        _save(page.screenshot(), args.out / "narrow.png")
        page.set_viewport_size({"width": 1280, "height": 860})
        page.goto(f"{args.url}/docs")
        page.wait_for_selector(".opblock")
        _save(page.screenshot(), args.out / "docs.png")
        browser.close()
    data.unlink()


if __name__ == "__main__":
    main()
