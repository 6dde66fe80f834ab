"""Standard ipywidgets render and update live in JupyterLab 4 and Notebook 7.

These tests prove the browser fixtures on plain ipywidgets: a widget that a task on the
kernel's asyncio loop updates must change on the page while no cell runs, and a widget's
`_dom_classes` must be usable as a CSS selector.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .jupyter_ui import JupyterServer, open_notebook, run_all, save_screenshot, write_notebook

UIS = ["lab", "notebook"]

SHOW_WIDGETS = """\
import asyncio
import ipywidgets as widgets

progress = widgets.IntProgress(value=0, max=50, description="ticks")
progress.add_class("cw-tick-progress")
label = widgets.Label(value="tick 0")
label.add_class("cw-tick-label")
display(widgets.VBox([progress, label]))
"""

# Five updates a second for at most two minutes, so the task ends by itself.
START_TICKER = """\
async def tick(count, interval):
    for n in range(1, count + 1):
        await asyncio.sleep(interval)
        label.value = f"tick {n}"
        progress.value = min(n, progress.max)

ticker = asyncio.get_running_loop().create_task(tick(count=600, interval=0.2))
"""

SHOW_PROBE = """\
import ipywidgets as widgets

first = widgets.Label(value="first row")
first.add_class("cw-probe-row")
second = widgets.Label(value="second row")
second.add_class("cw-probe-row")
second.add_class("cw-probe-row-failed")
probe = widgets.VBox([first, second])
probe.add_class("cw-probe")
display(probe)
"""


def tick_number(page: Page) -> int:
    text = page.locator(".cw-tick-label").inner_text()
    match = re.fullmatch(r"tick (\d+)", text.strip())
    assert match, f"the label shows {text!r}, expected 'tick N'"
    return int(match[1])


@pytest.mark.parametrize("ui", UIS)
def test_label_updates_from_loop_task(
    page: Page, jupyter_server: JupyterServer, tmp_path: Path, ui: str
) -> None:
    notebook = write_notebook(tmp_path / f"ticker-{ui}.ipynb", SHOW_WIDGETS, START_TICKER)
    open_notebook(page, jupyter_server, notebook, ui=ui)
    run_all(page)
    label = page.locator(".cw-tick-label")
    expect(label).to_have_text(re.compile(r"^tick \d+$"))
    first = tick_number(page)

    # No cell runs from here on, so the updates come from the task on the kernel's loop alone.
    page.wait_for_function(
        """(first) => {
            const text = document.querySelector('.cw-tick-label').textContent.trim();
            return Number(text.replace('tick ', '')) >= first + 3;
        }""",
        arg=first,
        timeout=10_000,
    )

    assert tick_number(page) >= first + 3
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    assert [prompt.strip() for prompt in prompts] == ["[1]:", "[2]:"]
    expect(page.locator(".jp-Notebook-ExecutionIndicator").first).to_have_attribute(
        "data-status", "idle"
    )
    progress_bar = page.locator(".cw-tick-progress .progress-bar")
    expect(progress_bar).to_have_attribute("style", re.compile(r"width: [1-9][\d.]*%"))
    save_screenshot(page, f"widgets-live-update-{ui}")


@pytest.mark.parametrize("ui", UIS)
def test_dom_classes_locate_widgets(
    page: Page, jupyter_server: JupyterServer, tmp_path: Path, ui: str
) -> None:
    notebook = write_notebook(tmp_path / f"probe-{ui}.ipynb", SHOW_PROBE)
    open_notebook(page, jupyter_server, notebook, ui=ui)
    run_all(page)

    probe = page.locator(".cw-probe")
    expect(probe).to_have_count(1)
    expect(probe).to_be_visible()
    rows = probe.locator(".cw-probe-row")
    expect(rows).to_have_text(["first row", "second row"])
    expect(probe.locator(".cw-probe-row.cw-probe-row-failed")).to_have_text("second row")


def test_kernel_runs_test_python(page: Page, jupyter_server: JupyterServer, tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "executable.ipynb", "import sys\nprint(sys.executable)")
    open_notebook(page, jupyter_server, notebook)
    run_all(page)

    output = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']")
    expect(output).to_have_text(sys.executable)
