"""Fixtures shared by the suite: a fresh CloudWright per test, on every store."""

from __future__ import annotations

import base64
import os
import secrets
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudwright_nb import CloudWright

ROOT = Path(__file__).resolve().parent.parent
STORES = ["memory", "sqlite", "firestore"]

sys.path.insert(0, str(ROOT / "bench"))
# Other test modules import free_port from here.
from emulator import (  # noqa: E402, F401 - bench/ is on the path only from the line above
    MISSING_EMULATOR,
    emulator_installed,
    free_port,
    running_emulator,
)


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start Google's Firestore emulator on a free loopback port; yield its host:port.

    Where the emulator is missing, Firestore tests skip, unless CLOUDWRIGHT_REQUIRE_FIRESTORE
    is set (CI sets it), where they fail.
    """
    if not emulator_installed():
        if os.environ.get("CLOUDWRIGHT_REQUIRE_FIRESTORE"):
            pytest.fail(MISSING_EMULATOR)
        pytest.skip(MISSING_EMULATOR)
    with running_emulator(tmp_path_factory.mktemp("emulator") / "emulator.log") as host:
        yield host


def reset_emulator(host: str, project: str) -> None:
    """Delete every document of `project` through the emulator's REST reset endpoint."""
    request = urllib.request.Request(
        f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents",
        method="DELETE",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def new_master_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep every test away from the user's real key file, store and settings."""
    for name in list(os.environ):
        if name.startswith("CLOUDWRIGHT_") or name in ("K_SERVICE", "JPY_SESSION_NAME"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLOUDWRIGHT_KEY_FILE", str(tmp_path / "config" / "master.key"))
    # google-auth must never probe the Compute Engine metadata server from a test.
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    CloudWright.reset()
    yield
    CloudWright.reset()


@pytest.fixture
def master_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = new_master_key()
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", key)
    return key


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store of each kind."""
    if request.param == "memory":
        yield f"memory://{request.node.name}-{secrets.token_hex(4)}"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from _firestore_url(request)


@pytest.fixture
def firestore_url(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from _firestore_url(request)


def _firestore_url(request: pytest.FixtureRequest) -> Iterator[str]:
    host = request.getfixturevalue("firestore_emulator")
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
    project = f"test-{secrets.token_hex(6)}"
    yield f"firestore://{project}"
    reset_emulator(host, project)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def app(store_url: str, master_key: str) -> str:
    """Configure CloudWright for application "test-app" on the parametrized store."""
    CloudWright.configure(app="test-app", store=store_url)
    return "test-app"


@pytest.fixture
def state(app: str):
    return CloudWright.get_module("state")


@pytest.fixture
def cloudflow(app: str):
    return CloudWright.get_module("cloudflow")


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python process that uses this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


PYTHON = sys.executable


@pytest.fixture
def function_env(tmp_path: Path, sqlite_url: str) -> dict[str, str]:
    """The environment of a function server: its store, key, stand-in folders and step log."""
    return subprocess_env(
        CLOUDWRIGHT_STORE=sqlite_url,
        CLOUDWRIGHT_MASTER_KEY=new_master_key(),
        DATA_ENGINE_HOME=str(tmp_path / "jobs"),
        GMAIL_OUTBOX=str(tmp_path / "outbox"),
        STEP_LOG=str(tmp_path / "steps.log"),
        CLOUDWRIGHT_INTERVAL="200ms",
    )
