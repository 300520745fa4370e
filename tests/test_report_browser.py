"""The HTML report in a real browser (headless Chromium): every section is rendered,
clicking a leaderboard header reorders its rows, provenance opens on click, and the page is
not blank."""

from __future__ import annotations

import io

import pytest
from browser_fixtures import chromium
from report_fixtures import write_report_runs

from fsarbench.report.page import collect_report, write_report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return write_report_runs(tmp_path_factory.mktemp("browser-runs"))


@pytest.fixture(scope="module")
def page(runs):
    """``(driver, report data)`` with the report loaded from its file:// URL."""
    data = collect_report(runs, n_boot=100)
    path = write_report(data, runs / "report")
    with chromium() as driver:
        driver.get(path.as_uri())
        yield driver, data


def _css(driver, selector):
    return driver.find_elements("css selector", selector)


def _column(table, index: int) -> list[str]:
    rows = table.find_elements("css selector", ":scope > tbody > tr")
    return [
        r.find_elements("css selector", ":scope > td")[index].get_attribute("data-sort")
        for r in rows
    ]


def test_every_section_and_table_is_rendered(page) -> None:
    driver, data = page
    tables = [t.get_attribute("data-table") for t in _css(driver, "table.paper")]
    assert tables == [str(t.number) for t in data.tables]
    for t in data.tables:
        rows = _css(driver, f"#table-{t.number} table.paper > tbody > tr")
        assert len(rows) == len(t.rows) and all(r.is_displayed() for r in rows)
    boards = [b.get_attribute("data-setting") for b in _css(driver, "table.board")]
    assert boards == [b.setting for b in data.boards]
    assert len(_css(driver, "table.verdicts > tbody > tr")) == len(data.verdicts)
    assert len(_css(driver, "table.health > tbody > tr")) == len(data.health)
    images = _css(driver, "#figures img")
    assert images and all(
        driver.execute_script("return arguments[0].naturalWidth", img) > 100 for img in images
    )
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_clicking_a_header_reorders_the_leaderboard(page) -> None:
    driver, _ = page
    table = _css(driver, "table.board")[0]
    headers = table.find_elements("css selector", ":scope > thead th")
    before = _column(table, 1)
    headers[1].click()  # Method
    after = _column(table, 1)
    assert after == sorted(before, key=str.lower) and after != before
    assert headers[1].get_attribute("aria-sort") == "ascending"
    headers[1].click()
    assert _column(table, 1) == sorted(before, key=str.lower, reverse=True)
    headers[2].click()  # accuracy, ascending: the leader goes last
    acc = [float(v) for v in _column(table, 2)]
    assert acc == sorted(acc) and _column(table, 3)  # the other columns moved with their rows
    headers[5].click()  # p vs leader: the leader has none and stays last
    p = _column(table, 5)
    assert p[-1] == "" and [float(v) for v in p[:-1]] == sorted(float(v) for v in p[:-1])
    headers[0].click()
    ranks = [int(v) for v in _column(table, 0)]
    assert ranks == sorted(ranks) and ranks[0] == 1


def test_verdicts_sort_numerically_by_difference(page) -> None:
    driver, _ = page
    table = _css(driver, "table.verdicts")[0]
    header = table.find_elements("css selector", ":scope > thead th")[5]
    header.click()
    diffs = [float(v) for v in _column(table, 5)]
    assert diffs == sorted(diffs) and len(set(diffs)) > 1
    header.click()
    assert [float(v) for v in _column(table, 5)] == sorted(diffs, reverse=True)


def test_shared_ranks_are_visible(page) -> None:
    driver, data = page
    tied = sum(r.tied for b in data.boards for r in b.rows)
    marks = [m for m in _css(driver, "table.board td.rank .tie") if m.is_displayed()]
    assert tied > 0 and len(marks) == tied


def test_provenance_opens_on_click(page) -> None:
    driver, data = page
    cell = _css(driver, "table.paper details.prov")[0]
    body = cell.find_element("css selector", ".prov-body")
    assert cell.get_attribute("open") is None and not body.is_displayed()
    cell.find_element("css selector", "summary").click()
    assert cell.get_attribute("open") is not None and body.is_displayed()
    first = next(c.provenance for r in data.tables[0].rows for c in r.cells if c.provenance)
    text = body.text
    assert first.title in text
    for name, value in first.fields:
        if name in ("manifest hash", "code digest", "code version", "training seeds"):
            assert f"{name} {value}" in text
    from selenium.webdriver.common.keys import Keys

    driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    assert cell.get_attribute("open") is None and not body.is_displayed()


def test_screenshot_is_not_blank(page) -> None:
    import numpy as np
    from PIL import Image

    driver, _ = page
    driver.execute_script("window.scrollTo(0, 0)")
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    colours = len(np.unique(pixels @ np.array([1 << 16, 1 << 8, 1])))
    dark = float((pixels.sum(1) < 600).mean())  # text, borders, tags: not white
    assert image.size[0] >= 1000 and colours > 100, colours
    assert 0.02 < dark < 0.9, dark
