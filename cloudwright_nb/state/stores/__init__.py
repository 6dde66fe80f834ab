"""Store URLs and the backends behind them; each backend is imported only when used."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from ...errors import DriverMissingError, StoreURLError
from .base import AppRow, Record, RunRow, Store, Transaction

__all__ = ["AppRow", "Record", "RunRow", "Store", "Transaction", "open_store"]

_FORMS = (
    "sqlite:///relative/file.db, sqlite:////absolute/file.db, "
    "firestore://PROJECT[/DATABASE] or memory://"
)


def open_store(url: str) -> Store:
    """Open the store a URL names.

    SQLite URLs follow SQLAlchemy's convention: three slashes and a relative path, or four
    slashes and an absolute one. `~` is expanded.
    """
    if not isinstance(url, str) or "://" not in url:
        raise StoreURLError(f"invalid store URL {url!r}: use {_FORMS}")
    scheme, rest = url.split("://", 1)

    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(url)

    if scheme == "sqlite":
        if not rest.startswith("/") or len(rest) < 2:
            raise StoreURLError(f"invalid store URL {url!r}: use {_FORMS}")
        if "?" in rest or "#" in rest:
            raise StoreURLError(
                f"invalid store URL {url!r}: sqlite store URLs take no query or fragment; "
                "cloudwright-nb sets the database options itself"
            )
        from .sqlite import SQLiteStore

        path = Path(os.path.expanduser(rest[1:]))
        return SQLiteStore(path, url)

    if scheme == "firestore":
        parts = urlsplit(url)
        project = parts.netloc
        database = parts.path.strip("/") or "(default)"
        if not project or "/" in database:
            raise StoreURLError(f"invalid store URL {url!r}: use firestore://PROJECT[/DATABASE]")
        try:
            from .firestore import FirestoreStore
        except ImportError as error:
            raise DriverMissingError(
                f"the firestore store needs google-cloud-firestore ({error.name} is missing): "
                'pip install "cloudwright-nb[firestore]"'
            ) from None
        return FirestoreStore(project, database, url)

    raise StoreURLError(f"unknown store scheme {scheme!r} in {url!r}: use {_FORMS}")
