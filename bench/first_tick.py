"""A deployed function's first tick on Firestore, against its imports and one transaction.

    python bench/first_tick.py            # 30 samples of each command
    python bench/first_tick.py --quick    # 5 samples

It starts Google's Firestore emulator on a free loopback port, unless FIRESTORE_EMULATOR_HOST
names one that is running.

Each sample is a fresh interpreter that imports functions_framework and the entry point, as a
function instance does, and then does one of two things:

- `one transaction`: opens the Firestore store, which imports the Firestore client, and runs
  one transaction that reads a record and writes it back;
- `first tick`: configures an application on the same store and makes the tick a request
  makes: `Engine.tick` of a run whose step returns RERUN, forced so the run is always due.

The child times itself from its first line to its last, so interpreter start-up is left out of
both. The two commands take turns, and the ratio of the medians is the target: at most 1.0.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys

from emulator import emulator_host
from harness import interleaved_medians, print_machine, print_ratio, use_throwaway_master_key

from cloudwright_nb import RERUN, CloudWright
from cloudwright_nb.flow.steps import step_specs

APP = "first-tick"
# The child's code before and after its work: the imports a function instance makes first.
START = "import time\nstarted = time.perf_counter()\nimport functions_framework\n"
START += "import cloudwright_nb.functions.entry\n"
END = "print(time.perf_counter() - started)\n"

TRANSACTION = """
from cloudwright_nb.state.stores import Record, open_store

store = open_store({url!r})

def work(transaction):
    found = transaction.read("bench/first-tick", ["record"])
    blob = found["record"].blob if found else b"value"
    transaction.put("bench/first-tick", Record("record", blob, None))

store.transact(work)
"""

TICK = """
from cloudwright_nb import RERUN, CloudWright
from cloudwright_nb.flow.steps import step_specs

def wait(context):
    return RERUN

CloudWright.configure(app={app!r}, store={url!r})
engine = CloudWright.get_module("cloudflow").engine
specs = {{spec.name: spec for spec in step_specs([wait])}}
result = engine.tick({run_id!r}, specs, force=True)
assert result.ran_step, result.reason
"""


def wait(context):
    return RERUN


def sample(code: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", START + code + END], check=True, capture_output=True, text=True
    )
    return float(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 samples of each command")
    arguments = parser.parse_args()
    with emulator_host() as host:
        measure(host, 5 if arguments.quick else 30)


def measure(host: str, samples: int) -> None:

    use_throwaway_master_key()
    url = f"firestore://bench-{secrets.token_hex(4)}"
    CloudWright.configure(app=APP, store=url)
    engine = CloudWright.get_module("cloudflow").engine
    specs = step_specs([wait])
    run = engine.create(specs, inputs={}, interval=60, timeout=None, script=None)
    commands = {
        "one transaction": TRANSACTION.format(url=url),
        "first tick": TICK.format(app=APP, url=url, run_id=run.id),
    }

    medians = interleaved_medians(commands, samples, sample)

    print_machine()
    print(f"{samples} samples of each command, interleaved, medians, against the emulator at")
    print(f"{host}; each imports functions_framework and cloudwright_nb.functions.entry first")
    print()
    for name, seconds in medians.items():
        print(f"imports + {name:<18}{1000 * seconds:8.1f} ms")
    print()
    ratio = medians["first tick"] / medians["one transaction"]
    print_ratio("first tick / one transaction, both after the imports", ratio)
    verdict = "met" if ratio <= 1.0 else "missed"
    print(f"target first tick / one transaction <= 1x: {verdict} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
