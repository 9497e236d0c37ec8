"""The lessons in a real browser: Voilà serves a notebook on loopback, Debian's Chromium (driven by Playwright)
opens it, the widgets render, dragging a slider changes the picture, and no cell shows an error.

Needs /usr/bin/chromium (`apt-get install chromium`); `.ci/run` installs it and sets RETINANET_LAB_REQUIRE_BROWSER=1,
so in CI a missing browser is a failure, never a skip. Screenshots go to artifacts/browser/.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts" / "browser"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

if not os.path.exists(CHROMIUM):
    if os.environ.get("RETINANET_LAB_REQUIRE_BROWSER"):
        raise RuntimeError("Chromium is required here (RETINANET_LAB_REQUIRE_BROWSER is set) but /usr/bin/chromium is missing")
    pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it and runs these tests",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    port = _free_port()
    log = open(tmp_path_factory.mktemp("voila") / "voila.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "voila", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
                             "--Voila.root_dir=notebooks", "--show_tracebacks=True"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MPLBACKEND": "Agg"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("voila did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.seek(0)
    print(log.read()[-3000:])


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(url, timeout=180_000)
    page.wait_for_selector(".widget-slider", timeout=180_000)  # the kernel ran the notebook and the widgets rendered
    return page


def _drag_first_slider(page) -> None:
    handle = page.locator(".widget-slider .noUi-handle").first
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] - 60, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()


LOADED = "() => { const i = document.querySelector('img.widget-image'); return i && i.complete && i.naturalWidth > 300; }"


def _image_src(page) -> str:
    return page.locator("img.widget-image").first.get_attribute("src")


def _no_errors(page) -> None:
    errors = page.locator("[data-mime-type='application/vnd.jupyter.stderr'], .jp-OutputArea-output.jp-mod-error")
    texts = [t for t in errors.all_inner_texts() if t.strip()]
    assert not texts, texts
    assert "Traceback" not in page.content()


@pytest.mark.parametrize("notebook, name", [("02_focal_loss.ipynb", "focal_loss"), ("08_live_detections.ipynb", "detections")])
def test_lesson_renders_and_a_slider_changes_the_plot(voila, browser, notebook, name):
    page = _open(browser, f"{voila}/voila/render/{notebook}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_function(LOADED, timeout=60_000)  # a real picture, decoded, not an empty image
    before = _image_src(page)
    page.screenshot(path=str(ARTIFACTS / f"{name}_before.png"), full_page=True)
    _drag_first_slider(page)
    page.wait_for_function("src => document.querySelector('img.widget-image').src !== src", arg=before, timeout=30_000)
    page.wait_for_function(LOADED, timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / f"{name}_after.png"), full_page=True)
    _no_errors(page)
    page.close()
