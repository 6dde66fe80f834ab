"""`cloudwright serve` and `cloudwright bundle`: an application as a Cloud Function.

Both write the same small entry module, which functions-framework loads as `--source`; so a
served application runs exactly as the deployed one does.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path

from ..app import check_app_name

ENTRY_POINT = "cloudwright"
# What the deployed function imports, pinned to the versions installed here.
RUNTIME_REQUIREMENTS = (
    "cryptography",
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


def bundle(script: Path, app: str, output: Path) -> list[str]:
    """Write a folder that `gcloud functions deploy --source` accepts; return what it holds."""
    script = script.resolve()
    output.mkdir(parents=True, exist_ok=True)
    if any(output.iterdir()):
        raise FileExistsError(f"{output} is not empty; choose a new folder for the bundle")

    for item in script.parent.iterdir():
        if item.name in _SKIPPED or item.name.startswith(".") or item.resolve() == output.resolve():
            continue
        target = output / item.name
        if item.is_dir():
            shutil.copytree(item, target, ignore=shutil.ignore_patterns(*_SKIPPED, "*.pyc"))
        else:
            shutil.copy2(item, target)

    # cloudwright-nb is not on a package index, so the bundle carries its own copy.
    package = Path(__file__).resolve().parent.parent
    shutil.copytree(
        package, output / "cloudwright_nb", ignore=shutil.ignore_patterns(*_SKIPPED, "*.pyc")
    )
    (output / "main.py").write_text(
        entry_module(f"Path(__file__).parent / {script.name!r}", app, "bundle")
    )
    (output / "requirements.txt").write_text(
        "".join(f"{name}=={metadata.version(name)}\n" for name in RUNTIME_REQUIREMENTS)
    )
    return sorted(path.name for path in output.iterdir())


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
