"""Count the Firestore calls that a state read and CloudFlow ticks cost, with a gRPC interceptor.

    python bench/roundtrips.py

It starts Google's Firestore emulator on a free loopback port, unless FIRESTORE_EMULATOR_HOST
names one that is running.
"""

from __future__ import annotations

import base64
import collections
import os
import secrets
from collections.abc import Callable

import grpc
from emulator import emulator_host

from cloudwright_nb import RERUN, CloudWright
from cloudwright_nb.flow.engine import Engine
from cloudwright_nb.flow.steps import step_specs
from cloudwright_nb.state.stores.firestore import FirestoreStore
from cloudwright_nb.state.vault import Vault


class CallCounter(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Counts every gRPC call by method name."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    def _count(self, details: grpc.ClientCallDetails) -> None:
        self.calls[details.method.rsplit("/", 1)[-1]] += 1

    def intercept_unary_unary(self, continuation, client_call_details, request):
        self._count(client_call_details)
        return continuation(client_call_details, request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        self._count(client_call_details)
        return continuation(client_call_details, request)

    def measure(self, action: Callable[[], object]) -> dict[str, int]:
        self.calls.clear()
        action()
        return dict(self.calls)


def measure_all(project: str) -> dict[str, dict[str, int]]:
    """Return the calls of each measured action, by gRPC method."""
    counter = CallCounter()
    store = FirestoreStore(project, interceptors=[counter])
    keys = CloudWright.master_keys()
    figures: dict[str, dict[str, int]] = {}

    vault = Vault("roundtrips", store, keys)
    from cloudwright_nb.state.module import StateModule

    state = StateModule(vault)
    figures["first state.set in a process"] = counter.measure(lambda: state.set("k", 1))
    figures["state.set"] = counter.measure(lambda: state.set("k", 2))
    figures["state.get"] = counter.measure(lambda: state.get("k"))
    figures["state.update"] = counter.measure(lambda: state.update("k", lambda n: n + 1))

    def wait(context):
        return RERUN

    specs = {spec.name: spec for spec in step_specs([wait])}
    engine = Engine(vault)
    run = engine.create(list(specs.values()), inputs={}, interval=1, timeout=None, script=None)
    first = engine.tick(run.id, specs, force=True, keep_lease=True)
    figures["rerun tick by the runner holding the lease"] = counter.measure(
        lambda: engine.tick(run.id, specs, force=True, keep_lease=True, kept=first.kept)
    )
    engine.release(first.kept)

    cold_store = FirestoreStore(project, interceptors=[counter])
    cold_engine = Engine(Vault("roundtrips", cold_store, keys))
    figures["rerun tick, fresh process (a function request)"] = counter.measure(
        lambda: cold_engine.tick(run.id, specs, force=True)
    )
    return figures


def main() -> None:
    os.environ.setdefault(
        "CLOUDWRIGHT_MASTER_KEY", base64.b64encode(secrets.token_bytes(32)).decode()
    )
    with emulator_host():
        figures = measure_all(f"bench-{secrets.token_hex(4)}")
    for action, calls in figures.items():
        detail = ", ".join(f"{method} {count}" for method, count in sorted(calls.items()))
        print(f"{action:<48} {sum(calls.values())} call(s): {detail}")


if __name__ == "__main__":
    main()
