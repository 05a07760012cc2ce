"""The web page in a real browser (Playwright + the system Chromium; never downloads a browser).

Skipped when the ``playwright`` package or a Chromium binary is missing (a failure instead with
T2IGAN_REQUIRE_BROWSER=1, as in .ci/run, which installs both). Environment:
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


def browser_or_skip():
    """(playwright.sync_api, Chromium path); without them the test is skipped, or fails where
    T2IGAN_REQUIRE_BROWSER=1 (.ci/run sets it: CI must run the page in a real browser)."""
    stop = pytest.fail if os.environ.get("T2IGAN_REQUIRE_BROWSER") == "1" else pytest.skip
    try:
        from playwright import sync_api
    except ImportError:
        stop("playwright is not installed (pip install playwright)")
    exe = chromium_path()
    if exe is None:
        stop("no Chromium found (apt-get install chromium, or set T2IGAN_CHROMIUM)")
    return sync_api, exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(uvicorn, app):
    """Run ``app`` under uvicorn in a daemon thread; yield its URL, then stop it and close the app."""
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


@pytest.fixture
def server_url(tiny_dfgan):
    uvicorn = pytest.importorskip("uvicorn")
    from t2igan.serve.app import Settings, create_app

    model = os.environ.get("T2IGAN_SERVE_MODEL") or str(tiny_dfgan)
    app = create_app({Path(model).name: model, "tiny": str(tiny_dfgan)}, Settings())
    yield from serve_in_thread(uvicorn, app)


def test_page_generates_images(server_url, tmp_path):
    sync_api, exe = browser_or_skip()
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


@pytest.fixture
def mirrorgan_url(tiny_damsm, tmp_path):
    """A tiny MirrorGAN (3 stages, word attention at 2) served over HTTP."""
    uvicorn = pytest.importorskip("uvicorn")
    from test_serve_families import build_family_dirs

    from t2igan.serve.app import Settings, create_app

    dirs = build_family_dirs(tiny_damsm, tmp_path)
    app = create_app({"mirror": dirs["mirrorgan"], "stack1": dirs["stackgan_stage1"]}, Settings())
    yield from serve_in_thread(uvicorn, app)


def test_page_shows_stages_and_attention(mirrorgan_url):
    """A real multi-stage attention model: a row per stage, and per attended stage a row with the image
    and one heat map per word, labelled with the word; a one-stage model greys the boxes out."""
    sync_api, exe = browser_or_skip()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(mirrorgan_url + "/")
            page.wait_for_function("document.querySelectorAll('#model option').length === 2", timeout=10000)
            assert "3 stages, attention" in page.text_content("#model option[value=mirror]")
            page.fill("#captions", "red petals and a yellow center")
            page.fill("#n", "1")
            page.check("#stages")
            page.check("#attention")
            page.click("#generate")
            page.wait_for_function("document.querySelectorAll('#extras .caprow').length === 5", timeout=20000)
            caps = page.locator("#extras .cap").all_text_contents()
            assert caps[:3] == ["stage 1 · 8px", "stage 2 · 16px", "stage 3 · 32px"]
            assert caps[3].startswith("attention · caption 0 #0 · stage 2 (8px")
            assert caps[4].startswith("attention · caption 0 #0 · stage 3 (16px")
            words = page.locator("#extras .caprow.sub").nth(0).locator("figcaption").all_text_contents()
            assert words == ["image", "red", "petals", "and", "a", "yellow", "center"]
            assert page.locator("#extras img").count() == 3 + 2 * 7
            page.select_option("#model", "stack1")
            assert "off" in page.get_attribute("#stages-label", "class")
            assert "off" in page.get_attribute("#attention-label", "class")
            page.click("#generate")
            page.wait_for_function("document.querySelector('#notes').textContent.includes('one image scale')",
                                   timeout=20000)
            assert page.locator("#extras .caprow").count() == 0
            assert not errors, errors
        finally:
            browser.close()
