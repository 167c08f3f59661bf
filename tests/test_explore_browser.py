"""The explorer site in a real browser: Debian's headless Chromium driven by Selenium (chromedriver), on the site
``kgzsl explore`` writes for the small real ``photo_run`` (calibrated on the 20 foolbox photos, explored without
them). Opens a deep link, checks the class page against ``kgzsl inspect --json``, searches and follows a suggestion,
clicks a neighbour and a point of the map, and finds the calibration curves that hedge.json recorded drawn on the home
page. Prints the first paint and search times (measured, never asserted)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from kgzsl.cli import main
from kgzsl.vision.samples import GIRAFFE_WNID

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

#: where Debian's chromium and chromium-driver put their programs (scripts/setup.sh installs them)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                "--enable-unsafe-swiftshader", "--use-angle=swiftshader")


def chromium_driver():
    """A headless Chromium session (WebGL through SwiftShader, so the map's scattergl draws without a GPU)."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in BROWSER_ARGS:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def site(photo_run, foolbox_shards, tmp_path_factory):
    """The site of a calibrated copy of the photo run, written without --features: no photos, the recorded curves."""
    root = tmp_path_factory.mktemp("explore-browser")
    run = shutil.copytree(photo_run["run"], root / "run")
    assert main(["calibrate", "--features", str(foolbox_shards), "--predictions", str(run), "--json"]) == 0
    out = root / "site"
    assert main(["explore", str(run), "--out", str(out), "--json"]) == 0
    return out


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no Chromium here: install Debian's chromium and chromium-driver (scripts/setup.sh does)")
    driver = chromium_driver()
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 30):
    """Wait until ``script`` (a JavaScript expression) is truthy; its value."""
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(f"return {script};"))


def open_class(driver, site: Path, node_id: str) -> None:
    driver.get((site / "index.html").as_uri() + "#" + node_id)
    wait_for(driver, f"window.KG_STATE && KG_STATE.rendered !== undefined && KG_NODES.ids[KG_STATE.rendered] === {node_id!r}")


def page_class(driver) -> tuple[str, str]:
    return driver.find_element(By.ID, "class-name").text, driver.find_element(By.ID, "class-id").text


def test_a_deep_link_shows_what_inspect_reports(browser, site, photo_run, capsys):
    open_class(browser, site, GIRAFFE_WNID)
    paint = wait_for(browser, "performance.getEntriesByName('first-contentful-paint').length && "
                              "performance.getEntriesByName('first-contentful-paint')[0].startTime")
    ready = browser.execute_script("return performance.getEntriesByName('kg-class-page')[0].startTime")
    capsys.readouterr()
    assert main(["inspect", GIRAFFE_WNID, "--predictions", str(photo_run["run"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert page_class(browser) == (report["names"][0], GIRAFFE_WNID)
    rows = browser.find_elements(By.CSS_SELECTOR, "#nearest-weight tr[data-id]")
    shown = [(r.get_attribute("data-id"), r.find_elements(By.TAG_NAME, "td")[2].text) for r in rows]
    assert shown == [(n["id"], f"{n['cosine']:.4f}") for n in report["nearest_by_weight"]]
    names = [r.find_element(By.TAG_NAME, "a").text for r in rows]
    assert names == [n["name"] for n in report["nearest_by_weight"]]
    attributed = [r.get_attribute("data-id") for r in browser.find_elements(By.CSS_SELECTOR, "#attribution tr[data-id]")]
    assert attributed == [a["id"] for a in report["attribution"]]
    assert browser.find_element(By.ID, "role").text == report["role"]
    assert "propagated" in browser.find_element(By.ID, "classifier-kind").text
    with capsys.disabled():
        print(f"\n[explorer] first contentful paint "
              f"{paint:.0f} ms, class page rendered {ready:.0f} ms")


def test_search_suggests_and_follows_a_suggestion(browser, site, capsys):
    open_class(browser, site, GIRAFFE_WNID)
    target = browser.execute_script("var i = KG_NODES.role.indexOf(0); return [KG_NODES.ids[i], KG_NODES.names[i][0]];")
    box = browser.find_element(By.ID, "search")
    start = time.perf_counter()
    box.send_keys(target[1])
    wait_for(browser, "!document.getElementById('suggestions').hidden && KG_STATE.suggestions > 0")
    wall = (time.perf_counter() - start) * 1000
    took = browser.execute_script("return KG_STATE.searchMs")
    items = browser.find_elements(By.CSS_SELECTOR, "#suggestions li")
    item = next(li for li in items if li.get_attribute("data-id") == target[0])
    item.click()
    wait_for(browser, f"KG_STATE.rendered !== undefined && KG_NODES.ids[KG_STATE.rendered] === {target[0]!r}")
    assert page_class(browser) == (target[1], target[0])
    assert browser.execute_script("return location.hash") == "#" + target[0]
    with capsys.disabled():
        print(f"\n[explorer] search {target[1]!r}: {took:.1f} ms in the page, {wall:.0f} ms typing to suggestions over WebDriver")


def test_a_neighbour_link_opens_its_page(browser, site):
    open_class(browser, site, GIRAFFE_WNID)
    link = browser.find_element(By.CSS_SELECTOR, "#nearest-weight tr[data-id] a")
    wanted, name = link.get_attribute("data-id"), link.text
    link.click()
    wait_for(browser, f"KG_STATE.rendered !== undefined && KG_NODES.ids[KG_STATE.rendered] === {wanted!r}")
    assert page_class(browser) == (name, wanted)
    assert browser.execute_script("return location.hash") == "#" + wanted
    assert browser.find_elements(By.CSS_SELECTOR, "#nearest-weight tr[data-id]")  # its own neighbours are listed


#: the most isolated point of the map (not highlighted), in pixels from the map element's top-left corner
ISOLATED_POINT = """
var gd = document.getElementById('map'), xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, X = KG_MAP, n = X.x.length;
var px = [], py = [], best = -1, far = -1, skip = {};
KG_STATE.highlighted.forEach(function (i) { skip[i] = true; });
for (var i = 0; i < n; i++) { px.push(xa._offset + xa.l2p(X.x[i])); py.push(ya._offset + ya.l2p(X.y[i])); }
for (var i = 0; i < n; i++) {
  if (skip[i]) continue;
  var near = Infinity;
  for (var j = 0; j < n; j++) if (j !== i) near = Math.min(near, Math.hypot(px[i] - px[j], py[i] - py[j]));
  if (near > far) { far = near; best = i; }
}
var r = gd.getBoundingClientRect();
return [best, px[best], py[best], r.width, r.height, far, KG_STATE.mapType];
"""


def test_clicking_a_point_of_the_map_opens_its_class(browser, site, capsys):
    open_class(browser, site, GIRAFFE_WNID)
    wait_for(browser, "KG_STATE.mapReady && KG_STATE.highlighted && KG_STATE.highlighted[0] === KG_STATE.rendered")
    node, x, y, width, height, gap, kind = browser.execute_script(ISOLATED_POINT)
    assert gap > 4, "no point of the map stands apart enough to click"
    target = browser.execute_script(f"return KG_NODES.ids[{node}]")
    plot = browser.find_element(By.ID, "map")
    ActionChains(browser).move_to_element_with_offset(plot, int(x - width / 2), int(y - height / 2)).pause(0.3).click().perform()
    wait_for(browser, f"KG_STATE.rendered !== undefined && KG_NODES.ids[KG_STATE.rendered] === {target!r}")
    assert page_class(browser)[1] == target
    assert browser.execute_script("return KG_STATE.highlighted[0]") == node  # the new class is the one highlighted
    with capsys.disabled():
        print(f"\n[explorer] map drawn as {kind}; clicked {target}")


#: per calibration plot: its traces, and how many points each drew (SVG paths of plotly's scatter layer)
CURVE_TRACES = """
return ['reliability', 'accspec'].map(function (id) {
  var gd = document.getElementById(id);
  return [gd.data.map(function (t) { return [t.name, t.x.length]; }), gd.querySelectorAll('.scatterlayer .trace').length,
          gd.querySelectorAll('.scatterlayer .point').length];
});
"""


def test_the_home_page_draws_the_recorded_calibration_curves(browser, site):
    """Without photos the home page draws hedge.json's reliability and accuracy-specificity curves with plotly."""
    browser.get((site / "index.html").as_uri())
    wait_for(browser, "window.Plotly && document.getElementById('accspec') && document.getElementById('accspec').data "
                      "&& document.querySelectorAll('#accspec .scatterlayer .trace').length > 0")
    assert "calibration images" in browser.find_element(By.ID, "curves-from").text
    (reliability, drawn_r, points_r), (accspec, drawn_a, points_a) = browser.execute_script(CURVE_TRACES)
    meta = browser.execute_script("return KG_META.calibration")
    curves = meta["reliability"]  # T=1 and the fitted T (as WebDriver hands objects back: keys in any order)
    assert sorted(reliability[1:]) == sorted([f"flat top-1, {k} (ECE {c['ece']:.3f})", len(c["confidence"])] for k, c in curves.items())
    assert all(n > 0 for _, n in reliability) and drawn_r == len(reliability) and points_r >= sum(n for _, n in reliability[1:])
    rules = meta["accuracy_specificity"]["rules"]
    assert sorted(name for name, _ in accspec) == sorted([x for rule in rules for x in (rule, rule + " targets")] + ["flat top-1"])
    assert sorted([name, n] for name, n in accspec if name in rules) == sorted([r, len(rules[r]["gain"])] for r in rules)
    assert drawn_a == len(accspec) and points_a > 0
