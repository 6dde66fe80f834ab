"""Fixtures shared by the suite: a fresh CloudWright per test, on every store."""

from __future__ import annotations

import base64
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudwright_nb import CloudWright

ROOT = Path(__file__).resolve().parent.parent
STORES = ["memory", "sqlite"]


def new_master_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep every test away from the user's real key file, store and settings."""
    for name in list(os.environ):
        if name.startswith("CLOUDWRIGHT_") or name in ("K_SERVICE", "JPY_SESSION_NAME"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLOUDWRIGHT_KEY_FILE", str(tmp_path / "config" / "master.key"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    CloudWright.reset()
    yield
    CloudWright.reset()


@pytest.fixture
def master_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = new_master_key()
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", key)
    return key


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store of each kind."""
    if request.param == "memory":
        return f"memory://{request.node.name}-{secrets.token_hex(4)}"
    return f"sqlite:///{tmp_path / 'store.db'}"


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
