"""Fixtures for browser tests: one Jupyter server and one headless chromium for this package.

The server runs JupyterLab 4 and Notebook 7 on one loopback port without authentication, with
its configuration, data, runtime and IPython folders in a temporary folder, so the user's
Jupyter setup is neither read nor changed. Its only kernel runs this test run's Python.
Playwright drives Debian's chromium (`make chromium` installs it) and never downloads a browser.

Both fixtures are package-scoped, so they stop once the last browser test has run. While it is
open, Playwright's sync API keeps an asyncio loop marked as running in the main thread. The rest
of the suite must not see that loop, because `asyncio.run()` raises there and CloudFlow would
schedule runs on it, where they never run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from .jupyter_ui import JupyterServer, save_screenshot

CHROMIUM = Path("/usr/bin/chromium")
# The background-networking flags stop chromium's own calls to Google services, which a closed
# network refuses. The tests reach only the Jupyter server on 127.0.0.1.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MISSING_CHROMIUM = (
    f"{CHROMIUM} is missing: install the Debian package chromium (`make chromium`, as root)"
)

KERNEL_NAME = "cloudwright-test-python"
KERNEL_DISPLAY_NAME = "Python (cloudwright-nb tests)"
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 30.0
# Playwright's default wait for each action and locator, in milliseconds.
PAGE_TIMEOUT_MS = 30_000
CALL_FAILED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder `browser`, so `pytest -m "not browser"` leaves them out."""
    browser_tests = Path(__file__).parent
    for item in items:
        if browser_tests in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Record on the test item whether its body failed, for the `page` fixture's teardown."""
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture(scope="package")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """Start `jupyter lab` on a free loopback port, and stop it and its kernels afterwards."""
    base = tmp_path_factory.mktemp("jupyter")
    root_dir = base / "root"
    config_dir = base / "config"
    data_dir = base / "data"
    root_dir.mkdir()
    _install_kernelspec(data_dir)
    _write_config(config_dir)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = base / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                # jupyter_server 2 reads the token from IdentityProvider.token. ServerApp.token
                # still works but logs a deprecation warning.
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                f"--ServerApp.root_dir={root_dir}",
                # CI runs as root, which the server rejects unless allowed.
                *(["--allow-root"] if os.geteuid() == 0 else []),
            ],
            env=_server_environment(base, config_dir, data_dir),
            cwd=root_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_answering(process, url, log_path)
        yield JupyterServer(
            url=url,
            root_dir=root_dir,
            kernel_name=KERNEL_NAME,
            kernel_display_name=KERNEL_DISPLAY_NAME,
        )
    finally:
        _stop_server(process)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Launch Debian's chromium headless through Playwright.

    Where chromium is missing the browser tests skip, unless CI is set, where they fail.
    """
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(MISSING_CHROMIUM)
        pytest.skip(MISSING_CHROMIUM)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(
    request: pytest.FixtureRequest, browser: Browser, jupyter_server: JupyterServer
) -> Iterator[Page]:
    """Open a fresh browser context and page, and shut down the kernels it started afterwards.

    When the test fails, the page is saved as test-artifacts/failed-TEST.png. Requests to any
    address other than the Jupyter server are aborted. If the page made any, the test errors in
    teardown with their URLs.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    other_hosts: list[str] = []

    def abort(route: Route) -> None:
        other_hosts.append(route.request.url)
        route.abort()

    context.route(re.compile(rf"^(?!{re.escape(jupyter_server.url)}/)"), abort)
    page = context.new_page()
    yield page

    if request.node.stash.get(CALL_FAILED, False):
        save_screenshot(page, "failed-" + re.sub(r"[^\w.-]+", "-", request.node.name))
    context.close()
    jupyter_server.shutdown_kernels()
    assert other_hosts == [], f"the page requested hosts other than {jupyter_server.url}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _install_kernelspec(data_dir: Path) -> None:
    """Write a kernelspec that starts an IPython kernel with this test run's Python."""
    kernel_dir = data_dir / "kernels" / KERNEL_NAME
    kernel_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNEL_DISPLAY_NAME,
        "language": "python",
        "metadata": {"debugger": False},
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(spec, indent=1))


def _write_config(config_dir: Path) -> None:
    """Write server and JupyterLab settings that keep the server off the network."""
    server_config = {
        # Only the kernelspec above may start, so no notebook runs another Python.
        "KernelSpecManager": {"allowed_kernelspecs": [KERNEL_NAME]},
        "MappingKernelManager": {"default_kernel_name": KERNEL_NAME},
        "LabApp": {
            # JupyterLab fetches a news feed and checks PyPI for a newer release by default,
            # and its extension manager searches PyPI.
            "news_url": None,
            "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
            "extension_manager": "readonly",
        },
    }
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(server_config, indent=1))

    # The announcements plugin shows a toast over the page that offers to fetch news.
    page_config = {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
    (config_dir / "labconfig").mkdir()
    (config_dir / "labconfig" / "page_config.json").write_text(json.dumps(page_config))

    # Notebooks render only the cells near the viewport by default, so the prompts of cells
    # scrolled away would be missing from the page; render every cell.
    tracker = config_dir / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))


def _server_environment(base: Path, config_dir: Path, data_dir: Path) -> dict[str, str]:
    """Return the environment of the server and so of its kernels, isolated under `base`."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("JUPYTER", "JPY_", "IPYTHON", "CLOUDWRIGHT_"))
    }
    environment.update(
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_DATA_DIR=str(data_dir),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(base / "ipython"),
        # A kernel that imports cloudwright_nb must never touch the user's key file or store.
        CLOUDWRIGHT_KEY_FILE=str(base / "cloudwright" / "master.key"),
        XDG_DATA_HOME=str(base / "xdg-data"),
        XDG_CONFIG_HOME=str(base / "xdg-config"),
        NO_GCE_CHECK="True",
    )
    return environment


def _wait_until_answering(process: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"jupyter lab exited with code {process.returncode} before answering at {url}. "
                f"Its log:\n{log_path.read_text()}"
            )
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"jupyter lab timed out: no answer at {url} within {SERVER_START_TIMEOUT} s. "
                    f"Its log:\n{log_path.read_text()}"
                ) from None
            time.sleep(0.2)


def _stop_server(process: subprocess.Popen) -> None:
    """Stop the server with SIGTERM, which shuts down its kernels, and kill what outlives it.

    Kernels run in sessions of their own, so they are found as the server's child processes
    before it stops and killed by process id if they are still running afterwards.
    """
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []

    process.send_signal(signal.SIGTERM)
    try:
        process.wait(SERVER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()
