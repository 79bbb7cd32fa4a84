"""The model web pages (/ui, /ui/{name}) in headless Chromium against a real ``bentoml serve``.

One module-scoped server holds two zoo models with their stored pictures (twomoon: 2-D,
digits: 64-D) and a tiny model stored without pictures (its samples picture is drawn by the
service). Chromium and chromedriver are Debian's (installed by ``.ci/run`` through
``KNET_SETUP_TEST=1``); selenium is given the driver's path, so it never downloads one.
Set ``KNET_UI_SCREENSHOT=docs/model_page.png`` to also write the README's screenshot.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import tiny_checkpoint
from PIL import Image
from safetensors import safe_open

from models.checkpoint import CIRCUIT_FILE, EVAL_FILE, WEIGHTS_FILE
from models.config import CircuitSpec
from models.hardware import projected_latency_s
from models.zoo import PUBLISHED_NATS, ZOO_DIR
from service.launch import running_server

pytestmark = [pytest.mark.http, pytest.mark.browser]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT_S = 60


def _knet(*args, env):
    return subprocess.run([sys.executable, "-m", "knet", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    home = {"BENTOML_HOME": str(root / "bentoml")}
    dirs = {"twomoon": ZOO_DIR / "twomoon", "digits": ZOO_DIR / "digits",
            "tiny": tiny_checkpoint(root / "tiny", name="tiny", steps=8)}
    r = _knet("store", "--no-zoo", *map(str, dirs.values()), env=home)
    assert r.returncode == 0, r.stderr
    with running_server(home, log_path=root / "server.log") as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            yield url, client, dirs, home, root


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1900", "--hide-scrollbars"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(condition, message=what)


def _images_loaded(driver) -> list[dict]:
    """Every <img> once the browser has finished with it: src, naturalWidth, caption."""
    js = ("return Array.from(document.images).map(i => "
          "({src: i.src, complete: i.complete, w: i.naturalWidth, alt: i.alt}))")
    _wait(driver, lambda d: all(i["complete"] for i in d.execute_script(js)), "images still loading")
    return driver.execute_script(js)


def _spec(directory: Path) -> CircuitSpec:
    return CircuitSpec.model_validate_json((directory / CIRCUIT_FILE).read_text())


def test_index_lists_served_models(server, browser):
    from selenium.webdriver.common.by import By
    url, client, dirs, *_ = server
    browser.get(url + "/ui")
    rows = browser.find_elements(By.CSS_SELECTOR, "#models tr.model-row")
    names = [r.find_element(By.TAG_NAME, "a").text for r in rows]
    assert sorted(names) == sorted(dirs) == sorted(m["name"] for m in client.get("/models").json()["models"])
    twomoon = next(r.text for r in rows if r.text.startswith("twomoon"))
    ev = json.loads((dirs["twomoon"] / EVAL_FILE).read_text())
    assert f"{ev['nll']:.3f}" in twomoon and f"{PUBLISHED_NATS['twomoon']:.3f}" in twomoon
    assert f"{projected_latency_s(_spec(dirs['twomoon'])) * 1e9:.3g} ns" in twomoon
    link = rows[names.index("digits")].find_element(By.TAG_NAME, "a")
    link.click()
    _wait(browser, lambda d: d.current_url.endswith("/ui/digits"), "the index links to the model page")


def test_model_page_shows_facts_figures_and_decoded_images(server, browser):
    from selenium.webdriver.common.by import By
    url, client, dirs, *_ = server
    browser.get(url + "/ui/twomoon")
    spec = _spec(dirs["twomoon"])
    text = browser.find_element(By.TAG_NAME, "main").text
    with safe_open(str(dirs["twomoon"] / WEIGHTS_FILE), "pt") as f:
        params = sum(f.get_tensor(k).numel() for k in f.keys())
    assert f"devices (edges) {spec.num_edges}" in text and f"parameters {params}" in text
    assert f"device family {spec.device}" in text and f"layers {len(spec.layers)}" in text
    assert browser.find_element(By.ID, "chip-latency").text == f"{projected_latency_s(spec) * 1e9:.3g} ns"
    ev = json.loads((dirs["twomoon"] / EVAL_FILE).read_text())
    assert browser.find_element(By.ID, "quality").text == f"{ev['nll']:.3f}"
    assert f"published KirchhoffNet {PUBLISHED_NATS['twomoon']:.3f}" in text
    images = _images_loaded(browser)
    stored = {p.name for p in dirs["twomoon"].glob("*.png")}
    assert {Path(httpx.URL(i["src"]).path).name for i in images} == stored and len(stored) >= 2
    for img in images:
        assert img["w"] > 0, f"picture not decoded: {img}"
        name = Path(httpx.URL(img["src"]).path).name
        assert client.get(img["src"]).content == (dirs["twomoon"] / name).read_bytes()


def test_model_without_stored_pictures_gets_a_rendered_samples_picture(server, browser):
    url, client, _, home, _ = server
    browser.get(url + "/ui/tiny")
    images = _images_loaded(browser)
    assert len(images) == 1 and images[0]["w"] > 0, images
    version = client.get("/models/tiny").json()["version"]
    cached = Path(home["BENTOML_HOME"]) / "knet-ui" / "tiny" / version / "samples.png"
    assert cached.is_file() and client.get(images[0]["src"]).content == cached.read_bytes()
    with Image.open(cached) as im:
        assert im.size[0] > 100 and len(im.convert("L").getcolors(1 << 16)) > 2  # not a blank canvas


def test_download_links_match_knet_export_and_listed_hashes(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    url, client, dirs, home, _ = server
    browser.get(url + "/ui/twomoon")
    rows = browser.find_elements(By.CSS_SELECTOR, "#artifacts tr")[1:]
    first = rows[0].find_element(By.CSS_SELECTOR, "a.download")
    assert first.get_attribute("data-kind") == "bundle"
    data = client.get(first.get_attribute("href")).content
    out = tmp_path / "bundle.zip"
    r = _knet("export", "bundle", str(dirs["twomoon"]), "--out", str(out), env=home)
    assert r.returncode == 0, r.stderr
    assert data == out.read_bytes()
    for row in rows:  # every listed size and SHA-256 is that of the bytes its link returns
        link = row.find_element(By.CSS_SELECTOR, "a.download")
        body = client.get(link.get_attribute("href")).content
        assert hashlib.sha256(body).hexdigest() in row.text, link.get_attribute("data-kind")
        assert f"{len(body):,} B" in row.text


@pytest.mark.parametrize("name,n,seed", [("twomoon", 37, 3), ("digits", 5, 1)])
def test_try_it_draws_one_svg_element_per_sample(server, browser, name, n, seed):
    from selenium.webdriver.common.by import By
    url, client, *_ = server
    browser.get(f"{url}/ui/{name}")
    for field, value in (("n", n), ("seed", seed)):
        box = browser.find_element(By.CSS_SELECTOR, f"#tryit input[name={field}]")
        box.clear()
        box.send_keys(str(value))
    browser.find_element(By.CSS_SELECTOR, "#tryit button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "timing").text.startswith(f"{n} samples"), "no answer drawn")
    points = browser.find_elements(By.CSS_SELECTOR, "#plot .pt")
    assert len(points) == n
    timing = browser.find_element(By.ID, "timing").text
    assert "answered in" in timing and "projected chip latency" in timing
    assert f"seed {seed}" in timing and f'"n": {n}' in browser.find_element(By.ID, "curl").text
    answer = client.post("/sample", json={"model": name, "n": n, "seed": seed}).json()["samples"]
    if name == "digits":  # 8×8 images, one <g> of 64 pixels per sample
        assert all(len(p.find_elements(By.TAG_NAME, "rect")) == 64 for p in points)
    else:  # the drawn circles are the answer's points
        xs = [float(p.get_attribute("cx")) for p in points]
        # equal up to the runtimes' agreement (export/ort_runtime.py): the two requests may be solved in
        # batches of different sizes, one by the engine and one by onnxruntime
        assert xs == pytest.approx([p[0] for p in answer], rel=1e-5, abs=1e-5)


def test_whole_model_page_renders_in_a_screenshot(server, browser, tmp_path):
    """A full-page screenshot after "try it" (the README's picture with KNET_UI_SCREENSHOT set)."""
    from selenium.webdriver.common.by import By
    url, *_ = server
    browser.get(url + "/ui/twomoon")
    browser.find_element(By.CSS_SELECTOR, "#tryit button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "timing").text.startswith("256 samples"), "no answer drawn")
    _images_loaded(browser)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    width = browser.execute_script("return window.innerWidth")
    browser.set_window_size(1400, 1900 + height - browser.execute_script("return window.innerHeight"))
    shot = tmp_path / "model_page.png"
    try:
        assert browser.save_screenshot(str(shot))
    finally:
        browser.set_window_size(1400, 1900)
    with Image.open(shot) as im:
        assert im.size[0] >= width and im.size[1] >= height
        assert len(im.convert("RGB").getcolors(1 << 20)) > 200  # text, pictures and points, not a blank page
        if os.environ.get("KNET_UI_SCREENSHOT"):
            im.convert("RGB").quantize(256).save(os.environ["KNET_UI_SCREENSHOT"], optimize=True)  # a small file


def test_bad_names_give_the_api_404_as_a_page(server, browser):
    from selenium.webdriver.common.by import By
    url, client, *_ = server
    api = client.get("/models/nope")
    page = client.get("/ui/nope")
    assert api.status_code == page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    browser.get(url + "/ui/nope")
    assert browser.find_element(By.ID, "error").text == api.json()["error"]
    assert client.get("/ui/twomoon/figures/nope.png").status_code == 404


def test_pages_are_self_contained(server):
    _, client, *_ = server
    for path in ("/ui", "/ui/twomoon"):
        r = client.get(path)
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert "http://" not in r.text.replace("http://127.0.0.1:3000", "").replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in r.text


def test_page_assets_ship_with_the_package_and_the_bento():
    """service/ui_assets/* is package data (pip install .) and in the bento's include list."""
    import fnmatch
    import tomllib

    import yaml
    root = Path(__file__).resolve().parent.parent
    assets = [p.relative_to(root).as_posix() for p in (root / "service" / "ui_assets").iterdir()]
    assert {"service/ui_assets/page.html", "service/ui_assets/style.css", "service/ui_assets/tryit.js"} <= set(assets)
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    include = yaml.safe_load((root / "bentofile.yaml").read_text())["include"]
    for a in assets:
        assert any(fnmatch.fnmatch(a.removeprefix("service/"), g) for g in package_data["service"]), a
        assert any(fnmatch.fnmatch(a, g) for g in include), a
