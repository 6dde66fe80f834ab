"""The run panel and the state browser, seen in a real JupyterLab 4 and Notebook 7."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from .jupyter_ui import JupyterServer, open_notebook, run_all, save_screenshot, write_notebook

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
QUICKSTART = ROOT / "notebooks" / "quickstart.ipynb"

SETUP = """\
%load_ext cloudwright_nb
from cloudwright_nb import CloudWright
CloudWright.configure(app="browser-test")
cloudflow = CloudWright.get_module("cloudflow")
state = CloudWright.get_module("state")
"""

POLLING_FLOW = """\
def prepare(context):
    print("prepared")
    return cloudflow.CONTINUE

def poll(context):
    print(f"check {context.attempt}")
    return cloudflow.CONTINUE if context.attempt >= 4 else cloudflow.RERUN

def report(context):
    print("reported")
    return cloudflow.CONTINUE

run = cloudflow.run(prepare, poll, report, interval="1s")
"""

ENDLESS_FLOW = """\
def forever(context):
    return cloudflow.RERUN

endless = cloudflow.run(forever, interval="1s")
"""


def step_state(page: Page, step: str) -> str:
    return page.locator(f'.cw-step[data-step="{step}"]').first.get_attribute("data-state") or ""


def watch_states(page: Page, step: str, until: str, seconds: float = 60) -> list[str]:
    """Return the states a step row showed, in order, until it showed `until`."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = step_state(page, step)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state == until:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"step {step} showed {seen}, never {until!r}")


def test_panel_rows_move_to_done_with_no_cell_run(
    page: Page, jupyter_server: JupyterServer, tmp_path: Path
) -> None:
    notebook = write_notebook(tmp_path / "live-panel.ipynb", SETUP, POLLING_FLOW)
    open_notebook(page, jupyter_server, notebook, ui="lab")
    run_all(page)
    prompts_after_run_all = page.locator(".jp-InputPrompt").all_inner_texts()

    states = watch_states(page, "poll", until="waiting")
    expect(page.locator(".cw-next")).to_contain_text("next check")
    page.locator(".cw-panel").first.screenshot(path=ARTIFACTS / "panel.png")
    states += watch_states(page, "poll", until="done")[1:]
    expect(page.locator('.cw-run[data-status="succeeded"]')).to_be_visible(timeout=30_000)
    save_screenshot(page, "panel-lab")

    assert "waiting" in states
    assert states[-1] == "done"
    assert step_state(page, "report") == "done"
    assert page.locator(".jp-InputPrompt").all_inner_texts() == prompts_after_run_all
    expect(page.locator(".cw-output").first).to_contain_text("reported")


def test_cancel_button_cancels_a_running_flow(
    page: Page, jupyter_server: JupyterServer, tmp_path: Path
) -> None:
    notebook = write_notebook(tmp_path / "cancel.ipynb", SETUP, ENDLESS_FLOW)
    open_notebook(page, jupyter_server, notebook, ui="lab")
    run_all(page)
    expect(page.locator('.cw-step[data-step="forever"][data-state="waiting"]')).to_be_visible(
        timeout=30_000
    )

    page.locator(".cw-cancel").first.click()

    expect(page.locator('.cw-run[data-status="cancelled"]')).to_be_visible(timeout=30_000)
    expect(page.locator(".cw-cancel").first).to_be_disabled()


def test_state_browser_shows_a_value_set_from_a_cell(
    page: Page, jupyter_server: JupyterServer, tmp_path: Path
) -> None:
    notebook = write_notebook(
        tmp_path / "browser.ipynb",
        SETUP,
        'state.set("browser-marker", {"seen": "in the page", "numbers": list(range(40))})\n'
        'state.set("other-key", 42)',
        "%state",
    )
    open_notebook(page, jupyter_server, notebook, ui="lab")
    run_all(page)

    rows = page.locator(".cw-state-row")
    expect(rows).to_have_count(2, timeout=30_000)
    marker = rows.filter(has_text="browser-marker")
    expect(marker).to_contain_text('"seen": "in the page"')
    page.locator(".cw-state-browser").first.screenshot(path=ARTIFACTS / "state-browser.png")
    expect(marker.locator("details pre")).to_be_hidden()
    marker.locator("summary").first.click()
    expect(marker.locator("details pre")).to_contain_text('"numbers": [')
    save_screenshot(page, "state-browser-lab")

    page.locator(".cw-filter input").first.fill("other")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("other-key")


def test_quickstart_runs_in_jupyterlab(
    page: Page, jupyter_server: JupyterServer, tmp_path: Path
) -> None:
    notebook = tmp_path / QUICKSTART.name
    shutil.copy(QUICKSTART, notebook)
    open_notebook(page, jupyter_server, notebook, ui="lab")

    run_all(page, timeout_ms=120_000)

    expect(page.locator('.cw-run[data-status="succeeded"]')).to_be_visible(timeout=60_000)
    expect(page.locator('.cw-step[data-state="done"]')).to_have_count(3)
    save_screenshot(page, "quickstart-lab")


def test_quickstart_panel_renders_in_notebook_7(
    page: Page, jupyter_server: JupyterServer, tmp_path: Path
) -> None:
    notebook = tmp_path / QUICKSTART.name
    shutil.copy(QUICKSTART, notebook)
    open_notebook(page, jupyter_server, notebook, ui="notebook")

    run_all(page, timeout_ms=120_000)

    expect(page.locator(".cw-panel")).to_be_visible(timeout=60_000)
    expect(page.locator('.cw-run[data-status="succeeded"]')).to_be_visible(timeout=60_000)
    expect(page.locator(".cw-steps tr.cw-step")).to_have_count(3)
    save_screenshot(page, "quickstart-notebook7")
