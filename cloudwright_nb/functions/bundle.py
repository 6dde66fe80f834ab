"""`cloudwright serve` and `cloudwright bundle`: an application as a Cloud Function.

Both write the same small entry module, which functions-framework loads as `--source`; so a
served application runs exactly as the deployed one does.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from importlib import metadata
from pathlib import Path

from ..app import check_app_name

ENTRY_POINT = "cloudwright"
# Packages the deployed function imports, pinned to the versions installed here.
RUNTIME_REQUIREMENTS = (
    "cryptography",
    "orjson",
    "platformdirs",
    "google-cloud-firestore",
    "functions-framework",
    "google-cloud-tasks",
    "google-auth",
)
_SKIPPED = {".git", ".venv", "venv", "__pycache__", ".ipynb_checkpoints", "node_modules", "build"}

_ENTRY_MODULE = '''"""Entry point of application {app!r}, written by `cloudwright {command}`."""

from pathlib import Path

from cloudwright_nb.functions.entry import http_handler

{target} = http_handler({script}, app={app!r})
'''


def entry_module(script: str, app: str, command: str) -> str:
    return _ENTRY_MODULE.format(target=ENTRY_POINT, script=script, app=app, command=command)


def serve(script: Path, app: str, host: str, port: int, workdir: Path) -> None:
    """Replace this process with functions-framework serving `script`.

    Replacing rather than starting a child lets a signal sent to `cloudwright serve` reach the
    server itself.
    """
    _check_can_serve(script, host, port)
    source = workdir / "main.py"
    source.write_text(entry_module(repr(str(script.resolve())), app, "serve"))
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        ENTRY_POINT,
        "--source",
        str(source),
        "--host",
        host,
        "--port",
        str(port),
    ]
    print(f"serving {script.name} as application {app!r} on http://{host}:{port}/", flush=True)
    sys.stderr.flush()
    os.execv(sys.executable, command)


def _check_can_serve(script: Path, host: str, port: int) -> None:
    """Fail before starting the server when the script cannot compile or the port is taken."""
    try:
        compile(script.read_bytes(), str(script), "exec")
    except SyntaxError as error:
        raise ValueError(f"{script.name} line {error.lineno}: {error.msg}; fix it first") from None
    with socket.socket() as probe:
        # As the server will: a port left in TIME_WAIT by a stopped server is free to reuse.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ValueError(
                f"cannot listen on {host}:{port} ({error.strerror}); choose another --port"
            ) from None


def bundle(script: Path, app: str, output: Path) -> tuple[list[str], list[str]]:
    """Write a folder that `gcloud functions deploy --source` accepts.

    Returns the names the folder contains and the names left out of it. Keys, databases, environment
    files and build output stay behind, so the upload carries no secret or local data; local
    packages (subfolders with a pyproject.toml or setup.py) are listed in requirements.txt so
    the build installs them.
    """
    script = script.resolve()
    if script.suffix != ".py":
        raise ValueError(f"{script.name} is not a Python script; bundle an APP.py")
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} is a file; choose a new folder for the bundle")
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} is not empty; choose a new folder for the bundle")

    output.mkdir(parents=True, exist_ok=True)
    try:
        left_out, packages = _copy_application(script.parent, output)
        # cloudwright-nb is not on a package index, so the bundle carries its own copy.
        package = Path(__file__).resolve().parent.parent
        shutil.copytree(package, output / "cloudwright_nb", ignore=_ignore_for_copy)
        (output / "main.py").write_text(
            entry_module(f"Path(__file__).parent / {script.name!r}", app, "bundle")
        )
        pinned = [f"{name}=={metadata.version(name)}" for name in RUNTIME_REQUIREMENTS]
        local = [f"./{name}" for name in packages]
        (output / "requirements.txt").write_text("".join(f"{line}\n" for line in pinned + local))
    except BaseException:
        # Leave no half-written bundle behind to trip the next attempt.
        shutil.rmtree(output, ignore_errors=True)
        raise
    return sorted(path.name for path in output.iterdir()), left_out


# Never uploaded: secrets, local data, environments and build output.
_SECRET_OR_LOCAL = (
    "*.key",
    "*.pem",
    "*.p12",
    ".env",
    "*.db",
    "*.db-wal",
    "*.db-shm",
    "*.sqlite",
    "*.sqlite3",
    "*.pyc",
    "outbox",
    "data_engine_jobs",
    "cloudwright_nb",
    "dist",
    "*.egg-info",
)


def _ignore_for_copy(folder: str, names: list[str]) -> set[str]:
    ignored = set(shutil.ignore_patterns(*_SECRET_OR_LOCAL)(folder, names))
    return ignored | {name for name in names if name in _SKIPPED or name.startswith(".")}


def _copy_application(source: Path, output: Path) -> tuple[list[str], list[str]]:
    names = sorted(path.name for path in source.iterdir())
    ignored = _ignore_for_copy(str(source), names)
    left_out = []
    packages = []
    for name in names:
        item = source / name
        if name in ignored or item.resolve() == output.resolve():
            if not name.startswith(".") and name not in _SKIPPED and name != "__pycache__":
                left_out.append(name)
            continue
        if item.is_dir():
            shutil.copytree(item, output / name, ignore=_ignore_for_copy)
            if (item / "pyproject.toml").exists() or (item / "setup.py").exists():
                packages.append(name)
        else:
            shutil.copy2(item, output / name)
    return left_out, packages


def function_name(app: str) -> str:
    """Turn an application name into a valid Cloud Functions name."""
    name = re.sub(r"[^a-z0-9-]+", "-", app.lower()).strip("-") or "cloudwright-app"
    return name if name[0].isalpha() else f"app-{name}"


def deploy_command(app: str, output: Path) -> str:
    check_app_name(app)
    return " \\\n    ".join(
        [
            f"gcloud functions deploy {function_name(app)}",
            "--gen2 --runtime=python311 --region=REGION",
            f"--source={output} --entry-point={ENTRY_POINT} --trigger-http",
            "--no-allow-unauthenticated --memory=512Mi --timeout=540s",
            "--set-secrets=CLOUDWRIGHT_MASTER_KEY=cloudwright-master-key:latest",
            "--set-env-vars=CLOUDWRIGHT_STORE=firestore://PROJECT,"
            "CLOUDWRIGHT_TASKS_QUEUE=projects/PROJECT/locations/REGION/queues/QUEUE,"
            "CLOUDWRIGHT_FUNCTION_URL=https://REGION-PROJECT.cloudfunctions.net/"
            + function_name(app),
        ]
    )
