"""The report page: built from a folder of runs, safe to open, and right in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SAMPLE
from dinotrack.cli import app
from dinotrack.pipeline import RunOptions, track_video
from dinotrack.records import RunRecord
from dinotrack.report import REPORT_FILE, write_report
from dinotrack.structs import UsageError
from dinotrack.testing.browser import headless_chromium, missing_browser

VIDEO, MASK, GT = SAMPLE / "shapes.mp4", SAMPLE / "shapes_mask.png", SAMPLE / "shapes_gt"
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_ERROR = "Disk full <script>alert(2)</script> & more"


def tiny(weights: Path, **changes: object) -> RunOptions:
    return RunOptions(model="tiny", weights=weights, device="cpu", short_side=64).replace(**changes)


@pytest.fixture(scope="module")
def runs(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch-like folder: a scored run, an unscored one with a hostile name, an interrupted one, a failed one."""
    root = tmp_path_factory.mktemp("runs") / "batch"
    track_video(VIDEO, MASK, root / "shapes", tiny(tiny_weights), gt=GT)
    track_video(VIDEO, MASK, root / HOSTILE_NAME, tiny(tiny_weights))
    stop = threading.Event()
    stop.set()
    track_video(VIDEO, MASK, root / "stopped", tiny(tiny_weights, overlay="none"), stop=stop)
    failed = RunRecord(source=str(VIDEO), mask=str(MASK), preset="default", settings={}, model="tiny",
                       weights={"source": "random", "sha256": None}, frames_total=60)
    failed.finish("failed", 0, {"total": 0.5})
    failed.error = HOSTILE_ERROR
    (root / "broken").mkdir()
    failed.write(root / "broken")
    write_report(root)
    return root


def expected_rows(root: Path) -> int:
    """One per object of each run, one for a run that tracked no object."""
    rows = 0
    for run in root.iterdir():
        if (run / "run.json").is_file():
            rows += max(1, len(json.loads((run / "run.json").read_text()).get("confidence") or {}))
    return rows


# --- The page as text --------------------------------------------------------------------------------------


def test_names_and_errors_are_escaped(runs: Path):
    page = (runs / REPORT_FILE).read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt; &amp; more" in page and "<script>alert" not in page
    assert "%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E/overlay.mp4" in page  # the video's link, URL-quoted


def test_the_policy_allows_no_network_and_only_the_page_code(runs: Path):
    page = (runs / REPORT_FILE).read_text()
    policy = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1))
    assert "default-src 'none'" in policy and "media-src 'self'" in policy and "img-src data:" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    for tag in ("script", "style"):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        assert len(blocks) == 1
        digest = base64.b64encode(hashlib.sha256(blocks[0].encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert not re.search(r"<[^>]*\s(style|on[a-z]+)\s*=", page)  # no inline style or event handler attributes


def test_statuses_placeholder_and_thumbnails(runs: Path):
    page = (runs / REPORT_FILE).read_text()
    assert 'status-interrupted">interrupted' in page and 'status-failed">failed' in page
    assert "No overlay video" in page  # the interrupted run was made without one
    assert page.count('src="data:image/jpeg;base64,') == 6  # three worst frames of each run with an overlay


def test_a_single_run_without_ground_truth_has_no_metric_columns(runs: Path, tmp_path: Path):
    output = write_report(runs / HOSTILE_NAME, tmp_path / "page.html")
    page = output.read_text()
    assert ">J&amp;F<" not in page and ">J recall<" not in page and ">confidence<" in page
    scored = (runs / "shapes" / REPORT_FILE).read_text()  # written by track_video(gt=...)
    assert ">J&amp;F<" in scored and "J&amp;F-Mean" in scored


def test_a_folder_without_runs_is_one_paragraph(tmp_path: Path):
    (tmp_path / "empty" / "child").mkdir(parents=True)
    with pytest.raises(UsageError, match="holds no dinotrack run"):
        write_report(tmp_path / "empty")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in message
    assert "holds no dinotrack run" in message and "Give the --output folder" in message
    assert not (tmp_path / "empty" / REPORT_FILE).exists()


def test_the_cli_writes_where_told(runs: Path, tmp_path: Path):
    result = CliRunner().invoke(app, ["report", str(runs), "--output", str(tmp_path / "out" / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "r.html").read_text()
    assert re.search(r'src="(\.\./)+[^"]*batch/shapes/overlay\.mp4"', page)


def test_batch_videos_that_left_no_run_are_shown_with_their_error(tmp_path: Path):
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "batch.json").write_text(json.dumps({"status": "failed", "videos": [
        {"name": "gone", "status": "failed", "error": "Cannot decode <b>gone.mp4</b> as a video."},
    ]}))
    page = write_report(batch).read_text()
    assert ">gone<" in page and "Cannot decode &lt;b&gt;gone.mp4&lt;/b&gt; as a video." in page
    assert 'status-failed">failed' in page and "No overlay video" in page


def test_records_of_older_versions_are_shown(tmp_path: Path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "source": "a.mp4", "mask": "m.png", "preset": "paper", "settings": {"topk": 5}, "model": "vits16",
        "weights": {}, "frames_total": 3, "status": "complete", "frames_done": 3, "fps": 2.0,
    }))
    page = write_report(run).read_text()
    assert "vits16" in page and "No overlay video" in page


# --- The page in a browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    reason = missing_browser()
    if reason:
        pytest.skip(f"no headless Chromium: {reason}")
    driver = headless_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, runs: Path):
    """The report opened from disk; the console's messages of the load in ``browser.load_log``."""
    browser.get((runs / REPORT_FILE).as_uri())
    browser.load_log = browser.get_log("browser")
    return browser


def test_the_page_loads_without_console_errors(page):
    assert page.title.startswith("dinotrack report")
    assert [entry for entry in page.load_log if entry["level"] == "SEVERE"] == []


def test_one_table_row_per_run_and_object(page, runs: Path):
    assert len(page.find_elements("css selector", "#object-table tbody tr")) == expected_rows(runs)


def column(page, index: int) -> list[str]:
    return [cell.text for cell in page.find_elements("css selector", f"#object-table tbody td:nth-child({index})")]


def test_clicking_a_header_sorts_by_it(page):
    header = page.find_element("css selector", "#object-table th:nth-child(1)")
    header.click()
    names = column(page, 1)
    assert names == sorted(names) and len(set(names)) > 1
    header.click()
    assert column(page, 1) == sorted(names, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
    page.find_element("css selector", "#object-table th:nth-child(4)").click()  # J&F: numbers, blanks last
    scores = column(page, 4)
    numbers = [float(text) for text in scores if text != "–"]
    assert numbers == sorted(numbers) and scores[: len(numbers)] == [f"{n:.3f}" for n in numbers]


def test_every_video_loads_with_the_run_duration(page, runs: Path):
    durations = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const videos = Array.from(document.querySelectorAll("video"));
        const ready = (video) => new Promise((resolve) => {
            if (video.readyState >= 1) { resolve(); return; }
            video.addEventListener("loadedmetadata", resolve);
            video.addEventListener("error", resolve);
        });
        Promise.all(videos.map(ready)).then(() => done(videos.map((v) => [v.getAttribute("src"), v.duration])));
    """)
    assert len(durations) == 2
    for src, duration in durations:
        run = runs / re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), src).rsplit("/", 1)[0]
        frames = json.loads((run / "run.json").read_text())["overlay"]["frames"]
        fps = cv2.VideoCapture(str(run / "overlay.mp4")).get(cv2.CAP_PROP_FPS)
        assert frames == 60 and abs(duration - frames / fps) <= 1 / fps


def test_the_charts_are_drawn(page):
    charts = page.find_elements("css selector", "figure.chart svg[role=img]")
    assert len(charts) == 6  # two objects in each of the three runs that tracked
    for chart in charts:
        assert chart.size["width"] > 100 and chart.find_elements("css selector", "polyline")


def test_a_screenshot_is_not_blank(page, tmp_path: Path):
    page.execute_script("window.scrollTo(0, 0)")
    picture = cv2.imdecode(np.frombuffer(page.get_screenshot_as_png(), dtype=np.uint8), cv2.IMREAD_COLOR)
    assert picture.std() > 20 and len(np.unique(picture.reshape(-1, 3), axis=0)) > 50


def test_hostile_names_stay_text(page):
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        page.switch_to.alert.text  # noqa: B018 - raises when no alert fired
    assert page.execute_script("return document.querySelectorAll('img[src=\"x\"], img:not([src^=\"data:\"])').length") == 0
    assert page.execute_script("return document.scripts.length") == 1
    text = page.find_element("tag name", "body").text
    assert HOSTILE_NAME in text and HOSTILE_ERROR in text
