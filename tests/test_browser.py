"""The web page in a real browser (Playwright + the system Chromium; never downloads a browser).

Skipped when the ``playwright`` package or a Chromium binary is missing. Environment:
T2IGAN_CHROMIUM (browser path, default /usr/bin/chromium), T2IGAN_SERVE_MODEL (serve this run
instead of the tiny test model), T2IGAN_SCREENSHOT (also save the screenshot there, e.g. docs/serve.png).
"""
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
CAPTION = "this flower has red petals and a yellow center"


def chromium_path() -> str | None:
    for p in (os.environ.get("T2IGAN_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
              shutil.which("chromium-browser")):
        if p and Path(p).is_file():
            return p
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server_url(tiny_dfgan):
    uvicorn = pytest.importorskip("uvicorn")
    from t2igan.serve.app import Settings, create_app

    model = os.environ.get("T2IGAN_SERVE_MODEL") or str(tiny_dfgan)
    app = create_app({Path(model).name: model, "tiny": str(tiny_dfgan)}, Settings())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    app.state.close()


def test_page_generates_images(server_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set T2IGAN_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text)
                    if m.type == "error" and "Failed to load resource" not in m.text else None)  # 4xx are expected
            page.goto(server_url + "/")
            page.wait_for_function("document.querySelectorAll('#model option').length === 2")
            page.fill("#captions", "")
            page.click(".chip >> nth=1")  # an example caption goes into the box
            assert page.input_value("#captions") == "a flower with thin blue petals"
            page.fill("#captions", CAPTION + "\na flower with thin blue petals")
            page.fill("#n", "4")
            page.fill("#seed", "3")
            page.click("#generate")
            page.wait_for_function("document.querySelectorAll('#results img.result-image').length === 8", timeout=30000)
            page.wait_for_function(
                "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
            assert "8 image(s)" in page.text_content("#status")
            assert page.is_enabled("#download")
            with page.expect_download() as dl:  # the grid download is a real PNG
                page.click("#download")
            grid = tmp_path / "grid.png"
            dl.value.save_as(grid)
            assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            page.fill("#steps", "6")
            page.click("#interpolate")
            page.wait_for_function("document.querySelectorAll('#interp-results img').length === 6", timeout=30000)
            # bad input shows the server's one-line error and the page keeps working
            page.fill("#captions", "qwerty zxcvb")
            page.click("#generate")
            page.wait_for_function("document.querySelector('#status').classList.contains('error')")
            assert "no word known" in page.text_content("#status")
            page.fill("#captions", CAPTION + "\na flower with thin blue petals")
            page.click("#generate")
            page.wait_for_function("document.querySelector('#status').textContent.includes('8 image(s)')", timeout=30000)
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("T2IGAN_SCREENSHOT"):
                out = Path(os.environ["T2IGAN_SCREENSHOT"])
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, out)
            assert not errors, errors
        finally:
            browser.close()


def test_page_shows_stages_and_attention_when_present(server_url):
    """DF-GAN has neither, so the response is faked in the browser to check the page draws them."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set T2IGAN_CHROMIUM)")
    import base64
    import io
    import json

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="PNG")
    im = {"caption_index": 0, "index": 0, "png_base64": base64.b64encode(buf.getvalue()).decode()}
    fake = {"model": "fake", "family": "attngan", "image_size": 16, "seed": 0, "n": 1, "captions": ["red"],
            "images": [im], "dropped_words": [], "stages": [[im], [im]], "attention": [im, {**im, "index": 1}],
            "notes": ["fake response"], "timing_ms": {"total": 1.0, "queue": 0.0}}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.route("**/v1/generate", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                     body=json.dumps(fake)))
            page.goto(server_url + "/")
            page.fill("#captions", "red")
            page.click("#generate")
            page.wait_for_function("document.querySelectorAll('#extras img').length === 4", timeout=10000)
            assert page.locator("#extras .cap").all_text_contents() == ["stage 1", "stage 2", "attention"]
            assert "fake response" in page.text_content("#notes")
        finally:
            browser.close()
