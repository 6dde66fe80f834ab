"""Every notebook in notebooks/ runs top to bottom in a real kernel, as nbclient runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, new_master_key

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output["text"])
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture
def notebook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDWRIGHT_STORE", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", new_master_key())
    monkeypatch.setenv("DATA_ENGINE_HOME", str(tmp_path / "jobs"))
    monkeypatch.setenv("GMAIL_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("LONG_JOB_SECONDS", "3")
    monkeypatch.setenv("CLOUDWRIGHT_EXAMPLES", str(ROOT / "examples"))
    return tmp_path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, notebook_env: Path, monkeypatch) -> None:
    copy = notebook_env / path.name
    shutil.copy(path, copy)
    # A Jupyter server tells the kernel which notebook it serves; nbclient does not.
    monkeypatch.setenv("JPY_SESSION_NAME", str(copy))
    notebook = nbformat.read(copy, as_version=4)

    NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(copy.parent)}},
    ).execute()

    errors = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert errors == []
    text = outputs_text(notebook)
    assert "succeeded" in text or path.name == "state_browser.ipynb"
    if path.name == "quickstart.ipynb":
        assert "'quickstart'" in text
        assert len(list((notebook_env / "outbox").glob("*.eml"))) == 1
    if path.name == "state_browser.ipynb":
        assert "state of application 'state_browser'" in text
        assert '"text": "hello"' in text
        remaining_keys = outputs_text(nbformat.v4.new_notebook(cells=notebook.cells[-1:]))
        assert "'greeting'" in remaining_keys
        assert "'temporary'" not in remaining_keys


def test_every_notebook_is_tested() -> None:
    assert {path.name for path in NOTEBOOKS} >= {
        "quickstart.ipynb",
        "long_running_job.ipynb",
        "state_browser.ipynb",
        "remote_dispatch.ipynb",
    }
