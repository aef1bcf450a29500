"""End to end: the real `e4e serve` command in a subprocess, driven by headless Chromium (selenium).

The page loads, a non-image upload shows its one-line message, a sample upload is inverted, moving a
slider with the keyboard changes the returned edit image. The server runs with its own HOME, TMPDIR
and working directory, so the test also checks that it wrote nothing outside its temporary folder and
removed that folder when stopped. Needs Debian's `chromium` + `chromium-driver` (installed by `make`
where apt is available) and the web extra; skips saying which is missing otherwise.

E4E_SERVE_SCREENSHOT=docs/images/serve.png makes it save the page (how the README's screenshot is made).
"""
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = sorted((REPO / "src" / "e4e" / "assets" / "samples").glob("*.png"))[0]  # a shipped held-out avatar
START_TIMEOUT = 90  # seconds for the server to answer (torch + gradio imports on a busy 2-core machine)
STEP_TIMEOUT = 45  # seconds for any one browser step

pytest.importorskip("gradio", reason="the web extra is not installed: pip install 'e4e[web]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install 'e4e[web]'")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def find_browser() -> tuple[str, str]:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver") or next((p for p in ("/usr/lib/chromium/chromedriver",) if Path(p).exists()),
                                                  None)
    if not browser or not driver:
        pytest.skip("headless Chromium not found: apt-get install chromium chromium-driver (make does where apt exists)")
    return browser, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@contextlib.contextmanager
def serving(tmp_path: Path, ignore_sigint: bool = False):
    """`e4e serve` in a subprocess with its own HOME / TMPDIR / cwd; yields (url, those folders).
    On exit it is stopped with SIGINT, what Ctrl-C sends."""
    box = {k: tmp_path / k for k in ("home", "tmp", "cwd")}
    for p in box.values():
        p.mkdir(parents=True)
    port = free_port()
    env = {**os.environ, "HOME": str(box["home"]), "TMPDIR": str(box["tmp"]), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "e4e.cli", "serve", "--port", str(port)], cwd=box["cwd"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"e4e serve did not come up in {START_TIMEOUT} s")
                time.sleep(0.5)
        yield url, box
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            log = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            log = proc.communicate()[0]
        box["log"] = log
        print(log[-3000:])


@pytest.fixture
def browser():
    binary, driver_path = find_browser()
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,860"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(STEP_TIMEOUT)
    yield drv
    drv.quit()


def fetch(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=STEP_TIMEOUT) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"), dtype=np.int16)


def loaded_src(drv, elem_id: str, other_than: str | None = None) -> str:
    """src of the image in #elem_id once it is a new one and fully loaded."""
    def ready(d):
        imgs = d.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
        if not imgs:
            return False
        src = imgs[0].get_attribute("src")
        done = d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", imgs[0])
        return src if done and src != other_than else False
    return WebDriverWait(drv, STEP_TIMEOUT).until(ready)


def status_text(drv, contains: str) -> str:
    """The status line under the images, once it mentions `contains`."""
    def ready(d):
        text = d.find_element(By.ID, "status").text
        return text if contains in text else False
    return WebDriverWait(drv, STEP_TIMEOUT).until(ready)


@pytest.mark.slow  # 20-40 s on a busy 2-core machine (server start-up, Chromium, a dozen edits)
def test_upload_move_a_slider_and_the_image_changes(browser, tmp_path):
    with serving(tmp_path / "server") as (url, box):
        drive_the_page(browser, url, tmp_path)
        browser.get("about:blank")  # leave the page before the server stops
    assert "Running on local URL:  http://127.0.0.1:" in box["log"]
    # the server wrote nothing outside its temporary folder, and removed that folder when stopped
    assert files_under(box["home"]) == [] and files_under(box["cwd"]) == [] and files_under(box["tmp"]) == []


def drive_the_page(browser, url: str, tmp_path: Path):
    browser.get(url)
    upload = WebDriverWait(browser, STEP_TIMEOUT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#upload input[type=file]"))

    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"this is not a picture")
    upload.send_keys(str(bad))
    assert status_text(browser, "Error") == "Error: holiday.png: not an image file (or an unsupported format)"

    browser.find_element(By.CSS_SELECTOR, "#upload button[aria-label='Clear']").click()
    upload = WebDriverWait(browser, STEP_TIMEOUT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#upload input[type=file]"))
    upload.send_keys(str(SAMPLE))
    assert "distortion" in status_text(browser, SAMPLE.stem)
    loaded_src(browser, "inversion")
    before = loaded_src(browser, "edited")

    slider = browser.find_element(By.CSS_SELECTOR, "#direction-0 input[type=range]")
    number = browser.find_element(By.CSS_SELECTOR, "#direction-0 input[type=number]")
    slider.click()  # focus; the click lands on the thumb's middle position (0)
    slider.send_keys(Keys.END)  # the slider's end (how far an edit goes is the model's)
    end = slider.get_attribute("max")
    WebDriverWait(browser, STEP_TIMEOUT).until(lambda d: float(number.get_attribute("value")) == float(end))
    after = loaded_src(browser, "edited", other_than=before)
    diff = np.abs(fetch(after) - fetch(before)).mean()
    assert diff > 1.0, f"the edit image hardly changed (mean abs difference {diff:.2f} / 255)"

    shot = os.environ.get("E4E_SERVE_SCREENSHOT")
    if shot:
        time.sleep(1.0)  # let the last slider event's image replace the earlier ones
        loaded_src(browser, "edited")
        png = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
        png.quantize(128, method=Image.Quantize.MEDIANCUT).save(shot, optimize=True)


@pytest.mark.slow
def test_ctrl_c_stops_the_server_even_when_its_parent_ignored_sigint(tmp_path):
    """A background job of a non-interactive shell starts with SIGINT ignored; e4e serve still stops on it
    and removes its folder (it used to be killed after the 30 s wait, leaving the folder behind)."""
    with serving(tmp_path / "server", ignore_sigint=True) as (url, box):
        urllib.request.urlopen(url, timeout=STEP_TIMEOUT).close()
    assert "e4e serve: stopping" in box["log"] and "e4e serve: removed" in box["log"]
    assert files_under(box["tmp"]) == []
