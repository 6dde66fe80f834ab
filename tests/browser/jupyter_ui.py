"""Drive JupyterLab 4 and Notebook 7 pages from browser tests.

The fixtures in conftest.py start the server and the browser. These helpers open a notebook,
run it through the UI and save screenshots. Both UIs are JupyterLab front ends, so the same
CSS classes (`.jp-Notebook`, `.jp-InputPrompt`, `.jp-Notebook-ExecutionIndicator`) and the
same "Run All Cells" command exist in each.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nbformat
from nbformat import NotebookNode
from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

Ui = Literal["lab", "notebook"]

# Both limits are generous estimates, not measured bounds. Starting a kernel takes a few seconds
# on a 2-core machine, and the first page load of JupyterLab parses megabytes of JavaScript.
KERNEL_START_TIMEOUT_MS = 60_000
RUN_ALL_TIMEOUT_MS = 120_000


@dataclass(frozen=True)
class JupyterServer:
    """A running Jupyter server that serves JupyterLab at /lab and Notebook 7 at /tree."""

    url: str
    root_dir: Path
    kernel_name: str
    kernel_display_name: str

    def api(self, path: str, method: str = "GET") -> Any:
        """Send a REST request and return the decoded JSON body, or None for an empty body.

        Requests other than GET need the `_xsrf` cookie and header that a browser would send,
        so the cookie is fetched first from the JupyterLab page, which sets it.
        """
        cookies = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
        headers = {}
        if method != "GET":
            with opener.open(f"{self.url}/lab", timeout=10):
                pass
            xsrf = next(cookie.value for cookie in cookies if cookie.name == "_xsrf")
            headers["X-XSRFToken"] = xsrf
        request = urllib.request.Request(f"{self.url}{path}", method=method, headers=headers)
        with opener.open(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut down every kernel the server runs, so the next test starts from none."""
        for kernel in self.api("/api/kernels"):
            self.api(f"/api/kernels/{kernel['id']}", method="DELETE")


def write_notebook(path: Path, *sources: str) -> Path:
    """Write a notebook with one code cell per source string to `path`, and return `path`."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, path)
    return path


def open_notebook(page: Page, server: JupyterServer, notebook: Path, ui: Ui = "lab") -> None:
    """Copy the .ipynb file `notebook` into the server's root and open it in `ui`.

    The copy is named like the source file. Its kernelspec is set to the server's kernel, which
    runs this test run's Python, and its outputs and execution counts are cleared, so the page
    shows only what this test runs. Returns once the page shows the kernel as idle.
    """
    content = nbformat.read(notebook, as_version=4)
    content.metadata["kernelspec"] = {
        "name": server.kernel_name,
        "display_name": server.kernel_display_name,
        "language": "python",
    }
    for cell in content.cells:
        _clear_outputs(cell)
    nbformat.write(content, server.root_dir / notebook.name)

    quoted_name = urllib.parse.quote(notebook.name)
    if ui == "lab":
        # `reset` starts from an empty workspace, so notebooks left open by an earlier test
        # are not restored next to this one.
        page.goto(f"{server.url}/lab/tree/{quoted_name}?reset")
    elif ui == "notebook":
        page.goto(f"{server.url}/notebooks/{quoted_name}")
    else:
        raise ValueError(f"invalid ui {ui!r}: use 'lab' or 'notebook'")

    wait_for_kernel_idle(page, server.kernel_display_name)


def wait_for_kernel_idle(
    page: Page, kernel_display_name: str, timeout_ms: float = KERNEL_START_TIMEOUT_MS
) -> None:
    """Wait until the open notebook's toolbar shows the kernel `kernel_display_name` as idle.

    The status indicator reads "idle" before any kernel is attached too, while the kernel name
    reads "No Kernel", so both are checked in one step. A kernel is then attached, has passed
    through starting and connecting, and has reported its status.
    """
    page.wait_for_function(
        """(name) => {
            const kernel = document.querySelector('.jp-Toolbar-kernelName');
            const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return kernel !== null && status !== null
                && kernel.textContent.trim() === name
                && status.getAttribute('data-status') === 'idle';
        }""",
        arg=kernel_display_name,
        timeout=timeout_ms,
    )


def run_all(page: Page, timeout_ms: float = RUN_ALL_TIMEOUT_MS) -> None:
    """Run every cell of the open notebook through the Run menu's "Run All Cells".

    Returns once every code cell shows a new execution count. Raises AssertionError, with the
    text of the notebook's stderr outputs, when the run stops before every cell has run, as
    it does after a cell raises.
    """
    before = max(_execution_counts(page), default=0)

    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()

    # Until the first cell is queued the prompts still show the previous state, so wait for
    # the run to start (a "[*]" prompt) or to have finished already before waiting for its end.
    page.wait_for_function(
        """(before) => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                .map((prompt) => prompt.textContent.trim());
            const ran = (text) => /^\\[\\d+\\]:$/.test(text) && Number(text.slice(1, -2)) > before;
            return prompts.some((text) => text === '[*]:') || prompts.every(ran);
        }""",
        arg=before,
        timeout=timeout_ms,
    )
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
            .every((prompt) => prompt.textContent.trim() !== '[*]:')""",
        timeout=timeout_ms,
    )

    counts = _execution_counts(page)
    cells = page.locator(".jp-CodeCell").count()
    if len(counts) != cells or min(counts, default=before + 1) <= before:
        stderr = page.locator(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
        )
        raise AssertionError(
            f"Run All Cells stopped before every cell ran ({len(counts)} of {cells} code cells "
            f"have an execution count). Stderr outputs: {stderr.all_inner_texts()}"
        )


def save_screenshot(page: Page, name: str) -> Path:
    """Save a PNG of the page's viewport as test-artifacts/NAME.png and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path)
    return path


def _execution_counts(page: Page) -> list[int]:
    """Return the execution count shown by each code cell that has one, in page order."""
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    return [
        int(match[1]) for text in prompts if (match := re.fullmatch(r"\[(\d+)\]:", text.strip()))
    ]


def _clear_outputs(cell: NotebookNode) -> None:
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
