"""Screenshots and timings of the explorer (``kgzsl explore``) in headless Chromium: docs/img/explorer-class.png (a class
page beside the map), docs/img/explorer-map.png (the map, the class and its neighbours highlighted, a hover label) and,
for a site written with --features, docs/img/explorer-photos.png (the photos scoring the class highest, each with its
top-5) and, for a calibrated run, docs/img/explorer-calibration.png (the run page's curves).

Also measures what docs/inspection.md reports: the site's size, first contentful paint and class-page time of a deep
link, and the search time (in the page, per keystroke's suggestion list), each the median of a few tries.

    .venv/bin/python scripts/explorer_screenshots.py                     # the default run runs/demo/run (read only)
    .venv/bin/python scripts/explorer_screenshots.py --site /tmp/site    # reuse a site kgzsl explore already wrote
    .venv/bin/python scripts/explorer_screenshots.py --run RUN --prefix explorer-birds --node NODE_ID

Needs Debian's chromium and chromium-driver (scripts/setup.sh installs them) and selenium (the test extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader", "--use-angle=swiftshader")


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ARGS + (f"--window-size={width},{height}",):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def wait(driver, script: str, timeout: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(f"return {script};"))


def open_class(driver, site: Path, node: str) -> tuple[float, float]:
    """Load the deep link of ``node`` in a fresh page; (first contentful paint, class page rendered) in ms."""
    driver.get("about:blank")
    driver.get((site / "index.html").as_uri() + "#" + node)
    wait(driver, f"window.KG_STATE && KG_STATE.rendered !== undefined && KG_NODES.ids[KG_STATE.rendered] === {node!r}")
    paint = wait(driver, "performance.getEntriesByName('first-contentful-paint').length && "
                         "performance.getEntriesByName('first-contentful-paint')[0].startTime")
    ready = driver.execute_script("return performance.getEntriesByName('kg-class-page')[0].startTime")
    return paint, ready


def search_times(driver, queries: list[str]) -> list[float]:
    """Type each query a key at a time; the in-page time of the last keystroke's suggestion list (ms)."""
    from selenium.webdriver.common.by import By

    times = []
    box = driver.find_element(By.ID, "search")
    for query in queries:
        box.clear()
        box.send_keys(query)
        wait(driver, "KG_STATE.suggestions > 0")
        times.append(driver.execute_script("return KG_STATE.searchMs"))
    box.clear()
    driver.execute_script("document.getElementById('suggestions').hidden = true")
    return times


def hover_current(driver) -> None:
    """Move the mouse onto the highlighted class on the map, so its hover label shows."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    x, y, w, h = driver.execute_script(
        "var gd = document.getElementById('map'), i = KG_STATE.rendered, r = gd.getBoundingClientRect();"
        "return [gd._fullLayout.xaxis._offset + gd._fullLayout.xaxis.l2p(KG_MAP.x[i]),"
        " gd._fullLayout.yaxis._offset + gd._fullLayout.yaxis.l2p(KG_MAP.y[i]), r.width, r.height];")
    ActionChains(driver).move_to_element_with_offset(driver.find_element(By.ID, "map"), int(x - w / 2), int(y - h / 2)).perform()
    time.sleep(0.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "demo" / "run"), help="the run to explore (read only)")
    parser.add_argument("--site", type=Path, help="an existing site of kgzsl explore to use (else one is written in a temp folder)")
    parser.add_argument("--features", help="a feature folder for the site's photos and calibration curves")
    parser.add_argument("--node", default="n02439033", help="the class page to show (default: giraffe)")
    parser.add_argument("--queries", nargs="+", default=["giraffe", "golden retriever", "n0243", "oak", "piano"])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--prefix", default="explorer")
    parser.add_argument("--tries", type=int, default=3)
    args = parser.parse_args()

    temp = None
    site = args.site
    if site is None:
        temp = tempfile.mkdtemp(prefix="kgzsl-explorer-")
        site = Path(temp) / "site"
        command = [sys.executable, "-m", "kgzsl", "explore", args.run, "--out", str(site), "--json"]
        subprocess.run(command + (["--features", args.features] if args.features else []), check=True, cwd=ROOT)
    try:
        size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
        driver = browser(1400, 900)
        try:
            loads = [open_class(driver, site, args.node) for _ in range(args.tries)]
            searches = search_times(driver, args.queries * args.tries)
            wait(driver, "KG_STATE.mapReady && KG_STATE.highlighted && KG_STATE.highlighted[0] === KG_STATE.rendered")
            time.sleep(0.5)
            args.out.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out / f"{args.prefix}-class.png"))
            hover_current(driver)
            from selenium.webdriver.common.by import By

            driver.find_element(By.ID, "mapbox").screenshot(str(args.out / f"{args.prefix}-map.png"))
            photos = driver.find_elements(By.ID, "photos")
            if photos:  # --features: the photos scoring the class highest, each with its top-5
                driver.execute_script("arguments[0].previousElementSibling.scrollIntoView()", photos[0])
                time.sleep(0.8)
                driver.save_screenshot(str(args.out / f"{args.prefix}-photos.png"))
            if driver.execute_script("return !!(KG_META.calibration && KG_META.calibration.reliability)"):
                driver.get((site / "index.html").as_uri())
                wait(driver, "window.Plotly && document.querySelector('#accspec .main-svg')")
                time.sleep(0.5)
                driver.save_screenshot(str(args.out / f"{args.prefix}-calibration.png"))
        finally:
            driver.quit()
        print(json.dumps({
            "site": str(site), "bytes": size, "MB": round(size / 1e6, 1),
            "first_contentful_paint_ms": round(statistics.median(p for p, _ in loads)),
            "class_page_ms": round(statistics.median(r for _, r in loads)),
            "search_ms_median": round(statistics.median(searches), 1), "search_ms_max": round(max(searches), 1),
            "loads": [[round(p), round(r)] for p, r in loads], "screenshots": str(args.out),
        }, indent=1))
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
