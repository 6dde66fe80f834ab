"""`CloudWright`: the application's name, inputs, store, master keys and module registry."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .durations import Duration, parse_duration
from .errors import (
    ApplicationNameError,
    InvalidInputError,
    StateError,
    StoreURLError,
    UnknownModuleError,
)
from .state import codec

log = logging.getLogger("cloudwright_nb")

ENTRY_POINT_GROUP = "cloudwright_nb.modules"
MAX_APP_NAME_LENGTH = 128
_HOW_TO_NAME = (
    'call CloudWright.configure(app="NAME"), pass --app NAME, or set CLOUDWRIGHT_APP=NAME'
)


def check_app_name(name: object) -> str:
    """Return `name` if it can name an application, else raise saying why not."""
    if not isinstance(name, str):
        raise ApplicationNameError(
            f"invalid application name {name!r}: it must be a string; {_HOW_TO_NAME}"
        )
    if not name.strip():
        raise ApplicationNameError(
            f"invalid application name {name!r}: it is empty; {_HOW_TO_NAME}"
        )
    if not name.isprintable():
        raise ApplicationNameError(
            f"invalid application name {name!r}: it contains control characters"
        )
    if len(name) > MAX_APP_NAME_LENGTH:
        raise ApplicationNameError(
            f"invalid application name {name[:40]!r}... of {len(name)} characters: "
            f"names are at most {MAX_APP_NAME_LENGTH} characters"
        )
    return name


def parse_inputs(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Turn `key=value` strings from a command line into a dict."""
    inputs = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise InvalidInputError(
                f"invalid input {pair!r}: write it as key=value, for example "
                "--input notification_email=you@example.com"
            )
        inputs[key.strip()] = value
    return inputs


def check_inputs(inputs: object) -> dict[str, Any]:
    """Return a run's inputs as a dict, after checking each is stored as state would be."""
    if not isinstance(inputs, Mapping):
        raise InvalidInputError(
            f"inputs must be a dict of names to JSON values, not {type(inputs).__name__} "
            f"{inputs!r:.60}; for example inputs={{'email': 'you@example.com'}}"
        )
    for name, value in inputs.items():
        if not isinstance(name, str):
            raise InvalidInputError(
                f"input name {name!r} is {type(name).__name__}; input names must be strings"
            )
        try:
            codec.encode_value(name, value)
        except StateError as error:
            raise InvalidInputError(f"invalid input {name!r}: {error}") from None
    return dict(inputs)


def _notebook_name() -> str | None:
    # Only look at IPython if the process already imported it: importing it here would cost
    # every deployed function a second of cold start.
    if "IPython" in sys.modules:
        from IPython import get_ipython

        shell = get_ipython()
        session = shell.user_ns.get("__session__") if shell is not None else None
        if session:
            return Path(session).stem
    session = os.environ.get("JPY_SESSION_NAME")
    return Path(session).stem if session else None


def _script_name() -> str | None:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or "ipykernel" in path:
        return None
    return Path(path).stem


class Runtime:
    """The process-wide facade; `from cloudwright_nb import CloudWright` is its one instance."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._settings: dict[str, Any] = {}
        self._factories: dict[str, Any] = {}
        self._modules: dict[tuple[str, str, str], Any] = {}
        self._store: Any = None
        self._master_keys: list | None = None
        self.script: Path | None = None
        self.bound_run_id: str | None = None
        # The `cloudwright` command is itself `__main__`; its name is no application's.
        self.name_from_main = True
        # Set by the deployed function while it executes the script for one request.
        self.request: Any = None

    def configure(
        self,
        *,
        app: str | None = None,
        store: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        interval: Duration | None = None,
        master_key: str | None = None,
        deployed: bool | None = None,
    ) -> None:
        """Set the application name, store URL, inputs, default interval or master key.

        Arguments left as None keep their current value. Modules returned by `get_module`
        before a change keep the settings they were created with.
        """
        with self._lock:
            if app is not None:
                self._settings["app"] = check_app_name(app)
            if store is not None:
                if not isinstance(store, str) or "://" not in store:
                    raise StoreURLError(
                        f"invalid store URL {store!r}: use sqlite:///path/to/file.db, "
                        "firestore://PROJECT[/DATABASE] or memory://"
                    )
                self._settings["store"] = store
                self._close_store()
            if inputs is not None:
                self._settings["inputs"] = check_inputs(inputs)
            if interval is not None:
                self._settings["interval"] = parse_duration(interval, name="interval")
            if master_key is not None:
                self._settings["master_key"] = master_key
                self._master_keys = None
            if deployed is not None:
                self._settings["deployed"] = deployed
            self._modules.clear()

    @contextlib.contextmanager
    def overriding(self, *, app: str | None = None, store: str | None = None) -> Iterator[None]:
        """Use another application or store inside the block, as a magic's --app does."""
        if app is None and store is None:
            yield
            return
        with self._lock:
            saved = dict(self._settings)
            saved_store, self._store = self._store, None
            try:
                self.configure(app=app, store=store)
                yield
            finally:
                if self._store is not None and self._store is not saved_store:
                    self._store.close()
                self._settings = saved
                self._store = saved_store
                self._modules.clear()

    def reset(self) -> None:
        """Forget every setting, registered module and cached module, as in a fresh process."""
        with self._lock:
            self._settings.clear()
            self._factories.clear()
            self._modules.clear()
            self._master_keys = None
            self._close_store()
            self.script = None
            self.bound_run_id = None
            self.name_from_main = True
            self.request = None

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def app(self) -> str:
        """The application name, which scopes state and runs."""
        name = (
            self._settings.get("app")
            or os.environ.get("CLOUDWRIGHT_APP")
            or (self.script.stem if self.script else None)
            or _notebook_name()
            or (_script_name() if self.name_from_main else None)
        )
        if name is None:
            if "ipykernel" in sys.modules:
                raise ApplicationNameError(
                    "cannot tell the application name: this kernel does not know its notebook's "
                    "name (nbconvert and nbclient do not pass it); call "
                    'CloudWright.configure(app="NAME") in a cell or set CLOUDWRIGHT_APP=NAME'
                )
            raise ApplicationNameError(
                "cannot tell the application name: this is neither a script nor a notebook "
                f"file; {_HOW_TO_NAME}"
            )
        return check_app_name(name)

    @property
    def inputs(self) -> Mapping[str, Any]:
        """The application's inputs, read-only."""
        return MappingProxyType(self._settings.get("inputs", {}))

    @property
    def configured_interval(self) -> float | None:
        """The interval set by `configure` (or `--interval`), in seconds, if any."""
        return self._settings.get("interval")

    @property
    def environment_interval(self) -> float | None:
        """The interval set by `CLOUDWRIGHT_INTERVAL`, in seconds, if any."""
        value = os.environ.get("CLOUDWRIGHT_INTERVAL")
        return parse_duration(value, name="CLOUDWRIGHT_INTERVAL") if value else None

    def bind_run(self, run_id: str | None) -> None:
        """Make the next `cloudflow.run(...)` attach to `run_id` instead of starting a run."""
        self.bound_run_id = run_id

    def take_bound_run_id(self) -> str | None:
        run_id, self.bound_run_id = self.bound_run_id, None
        return run_id

    @property
    def deployed(self) -> bool:
        """Whether this process is a deployed Cloud Function (set by Cloud Run's K_SERVICE)."""
        if "deployed" in self._settings:
            return bool(self._settings["deployed"])
        return bool(os.environ.get("K_SERVICE"))

    @property
    def store_url(self) -> str:
        url = self._settings.get("store") or os.environ.get("CLOUDWRIGHT_STORE")
        if url:
            return url
        from platformdirs import user_data_path

        return f"sqlite:///{user_data_path('cloudwright-nb') / 'store.db'}"

    def store(self):
        """Return the open store for `store_url`, opening it on first use."""
        with self._lock:
            if self._store is None:
                from .state.stores import open_store

                self._store = open_store(self.store_url)
                log.debug("using store %s", self._store.url)
            return self._store

    def master_keys(self) -> list:
        with self._lock:
            if self._master_keys is None:
                from platformdirs import user_config_path

                from .state.crypto import load_master_keys

                key_file = os.environ.get("CLOUDWRIGHT_KEY_FILE")
                path = (
                    Path(key_file)
                    if key_file
                    else user_config_path("cloudwright-nb") / "master.key"
                )
                self._master_keys = load_master_keys(
                    self._settings.get("master_key") or os.environ.get("CLOUDWRIGHT_MASTER_KEY"),
                    path,
                    may_create=not self.deployed,
                )
            return self._master_keys

    def vault(self, app: str | None = None):
        from .state.vault import Vault

        return Vault(check_app_name(app) if app else self.app, self.store(), self.master_keys())

    def register_module(self, name: str, module: Any) -> None:
        """Make `module` available as `get_module(name)`.

        A class or function is treated as a factory and called once, with no arguments, on the
        first `get_module(name)`; any other object is returned as it is.
        """
        if not isinstance(name, str) or not name:
            raise UnknownModuleError(f"invalid module name {name!r}: use a non-empty string")
        with self._lock:
            self._factories[name] = module
            self._modules = {k: v for k, v in self._modules.items() if k[0] != name}

    def get_module(self, name: str) -> Any:
        """Return the built-in, registered or plug-in module called `name`."""
        with self._lock:
            builtin = name in ("state", "cloudflow")
            cache_key = (name, self.app, self.store_url) if builtin else (name, "", "")
            if cache_key not in self._modules:
                self._modules[cache_key] = self._create_module(name)
            return self._modules[cache_key]

    def _create_module(self, name: str) -> Any:
        if name == "state":
            from .state.module import StateModule

            return StateModule(self.vault())
        if name == "cloudflow":
            from .flow.module import CloudFlow

            return CloudFlow(self)
        if name in self._factories:
            return _instantiate(self._factories[name])

        # importlib.metadata costs a deployed function about 20 ms, so only a plug-in pays it.
        from importlib.metadata import entry_points

        plugins = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
        if name in plugins:
            return _instantiate(plugins[name].load())
        known = sorted({"state", "cloudflow", *self._factories, *plugins})
        raise UnknownModuleError(
            f"no module named {name!r}; the modules available are {', '.join(known)}. "
            "Register one with CloudWright.register_module(name, obj) or install a package "
            f"that publishes it under the entry-point group {ENTRY_POINT_GROUP!r}"
        )


def _instantiate(module: Any) -> Any:
    if inspect.isclass(module) or inspect.isfunction(module):
        return module()
    return module


CloudWright = Runtime()
