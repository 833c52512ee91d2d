"""The ConfusionExplorer in a real browser: JupyterLab + headless Chromium driven by selenium.

Two tiny runs are trained and evaluated here (synthetic tiny scale, 2 steps each, 2 eval
images; inference thresholds lowered so that the barely trained models predict things).
A fresh JupyterLab server (free port, no token, its own root, config, settings and
workspace folders, announcements off) serves a notebook written by this test that builds
the explorer on them. The test runs all cells, moves the instance slider with a click and
ArrowRight, and checks the change twice: in the page (the plotly titles of the instance
views) and in the kernel (``explorer.state``, read through the kernel's connection file); then it clicks a predicted segment on
the panoptic image and checks that it becomes the selection, that plotly's toolbar does not
cover the images and that the panoptic panel follows the run toggle. A screenshot goes to
tests/artifacts/.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client import BlockingKernelClient

from ibs_study.config import load_preset
from ibs_study.engine.evaluate import evaluate_run
from ibs_study.engine.train import train
from ibs_study.viz.explorer.data import ExplorerData
from ibs_study.viz.panoptic import label_points

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # ~50 s on 2 cores, most of it JupyterLab and the kernel

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
LABELS = ["crop", "crop + IBS"]
# Barely trained models score below the usual inference thresholds; lower them so things are predicted.
FIXTURE_OVERRIDES = [
    "data.synthetic_scale=tiny",
    "data.crop_size=[32, 64]",
    "train.max_steps=2",
    "train.batch_size=4",
    "train.device=cpu",
    "model.panoptic_fcn.center_threshold=0.0",
    "model.panoptic_fcn.thing_score_threshold=0.0",
    "model.panoptic_fcn.rescored_score_threshold=0.0",
    "model.panoptic_fcn.overlap_threshold=0.0",
]


def _chromium() -> tuple[str, str] | None:
    binary = os.environ.get("IBS_CHROMIUM") or next(
        (p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None
    )
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    pytest.importorskip("selenium")
    paths = _chromium()
    if paths is None:
        pytest.skip(
            "Chromium or chromedriver not found (Debian: apt-get install chromium chromium-driver; "
            "or set IBS_CHROMIUM to the browser binary)"
        )
    return paths


@pytest.fixture(scope="module")
def fixture_runs(browser_paths, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("explorer_runs")
    runs = []
    for name, preset in [("crop", "synthetic_pfcn_crop"), ("crop_ibs", "synthetic_pfcn_crop_ibs")]:
        cfg = load_preset(preset, [f"data.root={root / 'data'}", *FIXTURE_OVERRIDES])
        train(cfg, root / name, progress=False)
        evaluate_run(root / name, max_images=2, device="cpu", progress=False)
        runs.append(root / name)
    return runs


@pytest.fixture()
def lab(fixture_runs, tmp_path) -> Iterator[tuple[str, Path]]:
    """A fresh JupyterLab on 127.0.0.1 serving tmp_path/lab; yields (base url, lab root)."""
    root = tmp_path / "lab"
    root.mkdir()
    config = tmp_path / "jupyter_config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "OMP_NUM_THREADS": "1",
    }
    port = _free_port()
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--IdentityProvider.token=", "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0", "--allow-root",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{url}/api/status") == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyter.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url, root
    finally:
        try:  # shuts the kernels down with the server
            urllib.request.urlopen(urllib.request.Request(f"{url}/api/shutdown", method="POST"), timeout=5)
            server.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


def _write_notebook(path: Path, runs: list[Path]) -> None:
    build = (
        "from ibs_study.viz import ConfusionExplorer\n"
        f"explorer = ConfusionExplorer.from_runs({[str(r) for r in runs]!r}, labels={LABELS!r}, split='val')"
    )
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(build), nbformat.v4.new_code_cell("explorer")]
    )
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(notebook, path)


def _titles(driver) -> list[str]:
    """textContent of every plotly title (SVG text: innerText would be empty)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.ibs-confusion-explorer .gtitle')).map(e => e.textContent)"
    )


def _view_title(driver) -> str | None:
    """The title of the first instance view: "crop: IMAGE_ID · car 2 (L)"."""
    return next((t for t in _titles(driver) if t.startswith(f"{LABELS[0]}: ") and " · " in t), None)


def _overlaps(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def _state(runtime_dir: Path) -> dict | None:
    """``explorer.state`` in the notebook's kernel (the one kernel of this server), or None before there is one."""
    connection_files = list(runtime_dir.glob("kernel-*.json"))
    if len(connection_files) != 1:
        return None
    client = BlockingKernelClient(connection_file=str(connection_files[0]))
    client.load_connection_file()
    client.start_channels()
    try:
        expression = "__import__('json').dumps(explorer.state) if 'explorer' in globals() else 'null'"
        msg_id = client.execute("", silent=True, user_expressions={"state": expression})
        reply = client.get_shell_msg(timeout=10)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = client.get_shell_msg(timeout=10)
        value = reply["content"]["user_expressions"]["state"]
        return json.loads(ast.literal_eval(value["data"]["text/plain"])) if value["status"] == "ok" else None
    finally:
        client.stop_channels()


def test_instance_slider_changes_mask_in_page_and_kernel(lab, fixture_runs, browser_paths, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = lab
    runtime_dir = tmp_path / "runtime"  # the lab fixture's JUPYTER_RUNTIME_DIR: the kernel's connection file
    _write_notebook(root / "explorer.ipynb", fixture_runs)
    # what the widget should select: the top-ranked image's predictions, most confused first
    data = ExplorerData.from_runs(fixture_runs, LABELS)
    image_id = data.ranked_images(0, 0.5)[0]["image_id"]
    records = data.records(0, image_id=image_id)
    expected = [r.segment_id for r in records]
    names = [data.pred_label(0, r) for r in records]  # "car 2 (L)"
    assert len(expected) >= 2, f"fixture run predicts {len(expected)} thing segment(s) on {image_id}; need 2"

    binary, chromedriver = browser_paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1700,1900"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=chromedriver), options=options)
    try:
        driver.get(f"{url}/lab/tree/explorer.ipynb")
        wait = WebDriverWait(driver, 60, poll_frequency=0.25)
        wait.until(lambda d: "| Idle" in d.find_element(By.ID, "jp-main-statusbar").text)
        driver.find_element(
            By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']"
        ).click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "li[data-command='runmenu:run-all']")).click()
        handle = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".ibs-instance-slider .noUi-handle"))
        wait.until(lambda d: _view_title(d) is not None)
        first_title = _view_title(driver)
        first_state = _state(runtime_dir)
        assert first_state is not None and first_state["segment_id"] == expected[0]
        assert first_title.startswith(f"{LABELS[0]}: {image_id} · {names[0]}")

        handle.click()
        handle.send_keys(Keys.ARROW_RIGHT)
        wait.until(lambda d: _view_title(d) not in (None, first_title))
        second_title = _view_title(driver)
        assert second_title.startswith(f"{LABELS[0]}: {image_id} · {names[1]}")
        wait.until(lambda d: (_state(runtime_dir) or {}).get("segment_id") == expected[1])
        state = _state(runtime_dir)
        assert (
            state["image_id"] == image_id and state["instance_index"] == 1 and state["title"] == second_title
        )
        # the second run's view follows too: the page shows the title the kernel set
        wait.until(lambda d: state["view_titles"][1] in _titles(d))
        status = driver.find_element(By.CSS_SELECTOR, ".ibs-explorer-status").text
        assert names[1] in status and "T=0.50: " in status
        assert not any(str(r.segment_id) in status for r in records if r.segment_id > 99)  # short names only

        # plotly's toolbar sits beside the images, not on them
        for figure in driver.find_elements(By.CSS_SELECTOR, ".ibs-confusion-explorer .js-plotly-plot"):
            images = figure.find_elements(By.CSS_SELECTOR, ".imagelayer image")
            bars = figure.find_elements(By.CSS_SELECTOR, ".modebar")
            for image in images:
                for bar in bars:
                    assert not _overlaps(image.rect, bar.rect), (image.rect, bar.rect)

        # a click on the panoptic image selects the predicted segment under the cursor
        id_map, _ = data.prediction(0, image_id)
        x, y = label_points(id_map, [expected[0]])[expected[0]]
        drag = driver.find_element(By.CSS_SELECTOR, ".ibs-confusion-explorer .js-plotly-plot .nsewdrag")
        box = drag.rect  # the plot area: x from -0.5 to W - 0.5, y from -0.5 (top) to H - 0.5
        height, width = id_map.shape
        offset_x = round((x + 0.5) / width * box["width"] - box["width"] / 2)
        offset_y = round((y + 0.5) / height * box["height"] - box["height"] / 2)
        ActionChains(driver).move_to_element_with_offset(drag, offset_x, offset_y).click().perform()
        wait.until(lambda d: (_state(runtime_dir) or {}).get("segment_id") == expected[0])
        wait.until(lambda d: (_view_title(d) or "").startswith(f"{LABELS[0]}: {image_id} · {names[0]}"))

        # the panoptic panel follows the run toggle
        driver.find_element(
            By.XPATH,
            f"//div[contains(@class,'widget-toggle-buttons')]//button[normalize-space()='{LABELS[1]}']",
        ).click()
        wait.until(lambda d: any(t.startswith(f"{LABELS[1]}: {image_id} (each segment") for t in _titles(d)))
        wait.until(lambda d: (_state(runtime_dir) or {}).get("run") == LABELS[1])

        ARTIFACTS.mkdir(exist_ok=True)
        explorer = driver.find_element(By.CSS_SELECTOR, ".ibs-confusion-explorer")
        driver.execute_script("arguments[0].scrollIntoView(true)", explorer)
        driver.save_screenshot(str(ARTIFACTS / "explorer_browser.png"))
    finally:
        driver.quit()
