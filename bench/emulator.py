"""Google's Firestore emulator on a free loopback port, for the benchmarks and the test suite."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

EMULATOR_JAR = Path(
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)
EMULATOR_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
MISSING_EMULATOR = (
    f"the Firestore emulator is not installed ({EMULATOR_JAR} is missing): install the Debian "
    "package google-cloud-cli-firestore-emulator and Java"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def emulator_installed() -> bool:
    java = any((Path(folder) / "java").exists() for folder in os.environ["PATH"].split(os.pathsep))
    return java and EMULATOR_JAR.exists()


@contextlib.contextmanager
def running_emulator(log_path: Path) -> Iterator[str]:
    """Start the emulator on a free loopback port, yield its host:port, and stop it.

    The jar is started with java directly: the gcloud wrapper leaves the Java process running
    when it is stopped.
    """
    host = f"127.0.0.1:{free_port()}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                "java",
                "-Duser.language=en",
                "-cp",
                str(EMULATOR_JAR),
                EMULATOR_MAIN,
                "--host",
                "127.0.0.1",
                "--port",
                host.rsplit(":", 1)[1],
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_http(f"http://{host}/", 60)
            yield host
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def emulator_host() -> Iterator[str]:
    """Yield FIRESTORE_EMULATOR_HOST, starting an emulator for the block if it is not set."""
    running = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if running:
        yield running
        return
    if not emulator_installed():
        raise SystemExit(f"{MISSING_EMULATOR}, or set FIRESTORE_EMULATOR_HOST to a running one")
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="firestore-emulator-"))
        host = stack.enter_context(running_emulator(Path(folder, "emulator.log")))
        os.environ["FIRESTORE_EMULATOR_HOST"] = host
        try:
            yield host
        finally:
            del os.environ["FIRESTORE_EMULATOR_HOST"]
