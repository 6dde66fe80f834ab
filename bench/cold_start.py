"""Import time of cloudwright-nb in a fresh interpreter, against functions_framework alone.

    python bench/cold_start.py            # 30 runs of each command
    python bench/cold_start.py --quick    # 5 runs of each command

Each sample is the wall time of a whole `python -c "import ..."` subprocess. The commands take
turns, and the medians are printed with the time of an interpreter that imports nothing, so the
import cost alone is the difference. Byte code is compiled by one untimed run of each command
first, as it is in a deployed function.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time

from harness import interleaved_medians, print_machine, print_ratio

# The module a function instance imports on a cold start: the entry module main.py loads. The
# Firestore store is imported on the first store call, and is measured on its own line.
OURS = "cloudwright_nb.functions.entry"
COMMANDS = {
    "python alone": "pass",
    "cloudwright_nb alone": "import cloudwright_nb",
    "cloudwright-nb": f"import {OURS}",
    "functions_framework": "import functions_framework",
    "framework + entry": f"import functions_framework, {OURS}",
    "with the Firestore store": f"import {OURS}, cloudwright_nb.state.stores.firestore",
}


def time_command(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def heaviest_packages(code: str, count: int) -> list[tuple[str, float]]:
    """Return the top-level packages whose modules took longest to import, in seconds."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        check=True,
        capture_output=True,
        text=True,
    )
    totals: collections.Counter[str] = collections.Counter()
    # Lines read "import time:  SELF_US |  CUMULATIVE_US | [indent]module".
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, module = line.removeprefix("import time:").split("|")
        totals[module.strip().split(".")[0]] += int(self_us) / 1e6
    return totals.most_common(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs of each command")
    arguments = parser.parse_args()
    runs = 5 if arguments.quick else 30

    medians = interleaved_medians(COMMANDS, runs, time_command)

    print_machine()
    print(f"{runs} runs of each command, interleaved, medians of the subprocess wall time")
    print(f"cloudwright-nb imports: {OURS}")
    print()
    baseline = medians["python alone"]
    for name, seconds in medians.items():
        line = f"{name:<26}{1000 * seconds:8.1f} ms"
        if name != "python alone":
            line += f"   imports {1000 * (seconds - baseline):6.1f} ms"
        print(line)

    print()
    ours, peer = medians["cloudwright-nb"], medians["functions_framework"]
    print_ratio("cold start, cloudwright-nb / functions_framework", ours / peer)
    print_ratio(
        "imports only, cloudwright-nb / functions_framework",
        (ours - baseline) / (peer - baseline),
    )
    # A function instance imports the framework anyway; what the entry point adds on top of
    # it is what the application pays on a cold start.
    both = medians["framework + entry"]
    print_ratio(
        "added by the entry point, over functions_framework's imports",
        (both - peer) / (peer - baseline),
    )

    print()
    print("cloudwright-nb's heaviest packages (-X importtime, self time, one run):")
    for package, seconds in heaviest_packages(COMMANDS["cloudwright-nb"], 8):
        print(f"  {package:<20}{1000 * seconds:7.1f} ms")


if __name__ == "__main__":
    main()
