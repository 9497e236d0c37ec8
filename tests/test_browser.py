"""The lessons in a real browser: Voilà serves a notebook on loopback, Debian's Chromium (driven by Playwright)
opens it, the widgets render, dragging a slider changes the picture, and no cell shows an error. A page with
every widget is measured at 1366 and 1920 px: no control label, button or dropdown text is cut off, the focal
explorer (controls and plot) fits a 1080 px screen, and the page asks no host but localhost for anything (Voilà
runs with the package's template, retinanet_lab/lessons/voila/templates/retinanet-lab, which drops the lab
template's Font Awesome links to a CDN: what `retinanet-lab voila` runs).

Needs /usr/bin/chromium (`apt-get install chromium`); `.ci/run` installs it and sets RETINANET_LAB_REQUIRE_BROWSER=1,
so in CI a missing browser is a failure, never a skip. Screenshots go to artifacts/browser/.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from retinanet_lab.lessons import voila_command

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




@contextlib.contextmanager
def _voila(root: Path, log_path: Path):
    """Voilà serving `root` on loopback with the lab's template (as the README's `voila` command runs it)."""
    port = _free_port()
    log = open(log_path, "w+")
    argv, env = voila_command(root, "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1", "--show_tracebacks=True")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**env, "MPLBACKEND": "Agg"})
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
    try:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"voila exited: {log.read()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.seek(0)
        print(log.read()[-3000:])


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    with _voila(ROOT / "notebooks", tmp_path_factory.mktemp("voila") / "voila.log") as url:
        yield url


# one notebook with every widget, as small as each allows (the monitor trains one epoch on 32 images)
ALL_WIDGETS = {
    "FocalLossExplorer": "FocalLossExplorer()",
    "HardExampleExplorer": "HardExampleExplorer(model)",
    "AnchorExplorer": "AnchorExplorer()",
    "ArchitectureView": "ArchitectureView()",
    "LogitsToDetections": "LogitsToDetections(model)",
    "DetectionExplorer": "DetectionExplorer(model)",
    "TrainingMonitor": "monitor",
}
SETUP = """from retinanet_lab.classroom import load_classroom_model
from retinanet_lab.data import ShapesDataset
from retinanet_lab.presets import preset
from retinanet_lab.widgets import *

model = load_classroom_model()
data = preset("classroom")["data"]
monitor = TrainingMonitor(train_data=ShapesDataset(32, seed=0, **data), val_data=ShapesDataset(4, seed=1, **data), epochs=1,
                          batch_size=8)
monitor.start(); monitor.join()"""


@pytest.fixture(scope="module")
def voila_widgets(tmp_path_factory):
    import nbformat

    root = tmp_path_factory.mktemp("widgets")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP)]
    for name, code in ALL_WIDGETS.items():
        nb.cells += [nbformat.v4.new_markdown_cell(f"## {name}"), nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "all_widgets.ipynb")
    with _voila(root, root / "voila.log") as url:
        yield f"{url}/voila/render/all_widgets.ipynb"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _open(browser, url: str, width: int = 1300, height: int = 1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.requested = []  # every URL the page asks for, to check that nothing leaves the machine
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(url, timeout=180_000)
    page.wait_for_selector(".widget-slider", timeout=180_000)  # the kernel ran the notebook and the widgets rendered
    return page


def _outside_requests(page) -> list[str]:
    """The page's requests to any host but this machine (data: and blob: URLs never leave the browser)."""
    local = {"127.0.0.1", "localhost", "::1", "[::1]"}
    return [u for u in page.requested if urllib.parse.urlparse(u).scheme not in ("data", "blob")
            and urllib.parse.urlparse(u).hostname not in local]


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


@pytest.mark.parametrize("notebook, name", [("02_focal_loss.ipynb", "focal_loss"), ("09_live_detections.ipynb", "detections")])
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
    if name == "focal_loss":  # on a 1920x1080 projector the controls and the whole plot are in view at once
        (box,) = page.evaluate(WIDGET_BOXES)
        assert box["height"] <= 1080 - 130, box
    assert not _outside_requests(page), _outside_requests(page)
    _no_errors(page)
    page.close()


ALL_LOADED = ("n => { const i = [...document.querySelectorAll('img.widget-image')]; "
              "return i.length >= n && i.every(x => x.complete && x.naturalWidth > 300); }")

# Every text of a control that ipywidgets cuts with an ellipsis (labels, buttons, toggle buttons, readouts) must fit its
# box; a dropdown's options (a <select> cuts them silently) must fit the select, less its padding and arrow.
CUT_OFF = """() => {
  const cut = [];
  for (const e of document.querySelectorAll('.widget-label, .widget-label-basic, .jupyter-button, .widget-readout')) {
    if (e.offsetParent === null || !e.textContent.trim()) continue;
    if (e.scrollWidth > e.clientWidth + 1) cut.push(`${e.className}: "${e.textContent.trim()}" ${e.scrollWidth} > ${e.clientWidth} px`);
  }
  const ctx = document.createElement('canvas').getContext('2d');
  for (const s of document.querySelectorAll('.widget-dropdown > select')) {
    const st = getComputedStyle(s);
    ctx.font = `${st.fontWeight} ${st.fontSize} ${st.fontFamily}`;
    const room = s.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight);
    for (const o of s.options) {
      const w = ctx.measureText(o.text).width;
      if (w > room) cut.push(`select: "${o.text}" ${Math.round(w)} > ${Math.round(room)} px`);
    }
  }
  return cut;
}"""

# per widget (in page order): its whole box (controls, picture, status) and the picture's natural and shown widths
WIDGET_BOXES = """() => [...document.querySelectorAll('img.widget-image')].map(img => {
  let box = img.closest('.widget-vbox');
  for (let up = box.parentElement.closest('.widget-vbox'); up; up = up.parentElement.closest('.widget-vbox')) box = up;
  const r = box.getBoundingClientRect();
  return {top: r.top + window.scrollY, height: r.height, natural: img.naturalWidth, shown: img.clientWidth,
          scrollWidth: document.documentElement.scrollWidth, viewport: window.innerWidth};
})"""


def test_every_widget_fits_at_classroom_screen_sizes(voila_widgets, browser):
    """No control label cut off at 1366 and 1920 px; pictures sharp (a PNG of twice the pixels it is shown at) and never
    wider than the page; the focal explorer's controls and plot fit a 1080 px screen; nothing asked from the internet."""
    page = _open(browser, voila_widgets, 1920, 1080)
    page.wait_for_function(ALL_LOADED, arg=len(ALL_WIDGETS), timeout=300_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for width, height in ((1920, 1080), (1366, 768)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(500)  # the layout settles
        problems += [f"{width} px: {c}" for c in page.evaluate(CUT_OFF)]
        boxes = page.evaluate(WIDGET_BOXES)
        assert len(boxes) == len(ALL_WIDGETS)
        for name, b in zip(ALL_WIDGETS, boxes):
            assert b["natural"] >= 2 * b["shown"] - 2, (width, name, b)  # 2x pixel density: sharp on a projector
            assert b["scrollWidth"] <= b["viewport"], (width, name, b)  # nothing sticks out to the right
        focal = boxes[list(ALL_WIDGETS).index("FocalLossExplorer")]
        if height >= 1080:  # a 1920x1080 projector: controls and plot in view at once (with room for the browser's bars)
            assert focal["height"] <= height - 130, focal
        page.screenshot(path=str(ARTIFACTS / f"all_widgets_{width}x{height}.png"), full_page=True)
        for name, element in zip(ALL_WIDGETS, page.locator(".jp-OutputArea-output:has(img.widget-image)").all()):
            element.screenshot(path=str(ARTIFACTS / f"{name}_{width}x{height}.png"))
    assert not problems, problems
    assert not _outside_requests(page), _outside_requests(page)
    _no_errors(page)
    page.close()


def test_voila_page_asks_no_host_but_localhost(voila, browser):
    """An offline classroom: a lesson page loads everything (scripts, styles, fonts, MathJax) from the Voilà server."""
    lesson = sorted((ROOT / "notebooks").glob("*_anchors_matching.ipynb"))[0].name  # a widget, images, MathJax
    page = _open(browser, f"{voila}/voila/render/{lesson}")
    page.wait_for_function(LOADED, timeout=60_000)
    page.wait_for_timeout(1000)  # late requests (fonts, lazily loaded extensions)
    assert page.requested and not _outside_requests(page), _outside_requests(page)
    page.close()


# --- JupyterLab: a lesson a student opens is not marked modified before anything runs ---------------------------------

KERNEL_IDLE = ("() => [...document.querySelectorAll('#jp-main-statusbar span')]"
               ".some(s => /Python 3.*\\|\\s*Idle/.test(s.textContent))")
TAB_DIRTY = ("() => { const t = document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current');"
             " return t ? [t.textContent, t.classList.contains('jp-mod-dirty')] : null; }")


@contextlib.contextmanager
def _jupyterlab(root: Path, log_path: Path):
    """JupyterLab serving `root` on loopback, no token, with its own (empty) settings and workspaces."""
    port = _free_port()
    log = open(log_path, "w+")
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(root.parent / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root.parent / "lab-workspaces")}
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--ServerApp.open_browser=False", f"--ServerApp.port={port}",
                             "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=",
                             f"--ServerApp.root_dir={root}", "--allow-root",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/lab", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"jupyter lab exited: {log.read()[-3000:]}") from None
                time.sleep(0.5)
        else:
            raise RuntimeError("jupyter lab did not start")
        yield url
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.seek(0)
        print(log.read()[-3000:])


def test_jupyterlab_opens_a_lesson_unmodified(browser, tmp_path):
    """A student opens a lesson in JupyterLab and does nothing: once its kernel is up and idle, the tab shows no
    "modified" dot (a lesson that JupyterLab rewrites on opening asks "save changes?" and autosaves over the student's
    copy), and the page asks no host but localhost for anything."""
    root = tmp_path / "course"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "02_focal_loss.ipynb", root)
    with _jupyterlab(root, tmp_path / "lab.log") as url:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.requested = []
        page.on("request", lambda request: page.requested.append(request.url))
        page.goto(f"{url}/lab/tree/02_focal_loss.ipynb?reset", timeout=120_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_function(KERNEL_IDLE, timeout=120_000)  # the kernel started and answered (language_info is in)
        page.wait_for_timeout(3000)  # late metadata updates from the kernel, the session, the widget manager
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "jupyterlab_02_opened.png"))
        label, dirty = page.evaluate(TAB_DIRTY)
        assert label.strip() == "02_focal_loss.ipynb", label
        assert not dirty, "JupyterLab marks the lesson modified right after opening it (see jupyterlab_02_opened.png)"
        assert page.requested and not _outside_requests(page), _outside_requests(page)
        page.close()
