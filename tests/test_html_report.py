"""The demo's self-contained HTML report, opened in a real headless browser (Debian's chromium and chromedriver).

`.ci/run` installs both with apt-get; where they are missing outside CI the browser test is skipped, in CI it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from cqbnet.demo import run_demo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "demo"
    run_demo(out, num_train=24, num_val=6, train_iters=2, device="cpu")
    return out


def lookup(metrics: dict, key: str) -> float:
    node = metrics
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return float(node)


def shown(metrics: dict, key: str) -> float:
    """The value a tagged number should show: PQ-type numbers in percent, costs as they are."""
    v = lookup(metrics, key)
    return 100 * v if key.startswith("modes.") else v


def test_the_page_stands_alone_and_tags_its_numbers(demo):
    page = (demo / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    text = re.sub(r'src="data:[^"]*"', "", page)
    assert "http" not in text and "src=" not in text and "<link" not in text  # nothing fetched from anywhere
    keys = set(re.findall(r'data-metric="([^"]+)"', page))
    for k in ("cost", "modes.argmax.all.pq", "modes.heuristic.things.sq", "modes.argmax.per_class.1.rq"):
        assert k in keys


def _browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium and chromedriver (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver here (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def test_the_report_in_a_real_browser_loads_every_image_and_shows_the_metrics_json(demo):
    from selenium.webdriver.common.by import By

    metrics = json.loads((demo / "metrics.json").read_text())
    driver = _browser()
    try:
        driver.get((demo / "report.html").absolute().as_uri())
        assert driver.title == "cqbnet demo"
        images = driver.find_elements(By.TAG_NAME, "img")
        pictures = sorted((demo / "pictures").glob("*.png"))
        assert len(images) == len(pictures) >= 3
        for img in images:
            ok = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
            assert ok, f"image {img.get_attribute('alt')!r} did not load"
        tagged = driver.find_elements(By.CSS_SELECTOR, "[data-metric]")
        checked = 0
        for el in tagged:
            key, text = el.get_attribute("data-metric"), el.text
            digits = len(text.split(".")[1]) if "." in text else 0
            assert text == f"{shown(metrics, key):.{digits}f}", key
            checked += 1
        # both modes, all three groups, every class
        classes = len(metrics["modes"]["argmax"]["per_class"])
        assert checked >= 2 * 3 * 3 + 2 * 3 * classes + 1
    finally:
        driver.quit()
