"""Verdict stores: where every gated transcript and its provenance is recorded."""
from __future__ import annotations

from echogate.store.base import Store, StoreItem, record_id_for


def open_store(url: str, max_group: int = 4096) -> Store:
    """Open the store named by `url`: a file path or `sqlite:PATH` is the embedded SQLite store."""
    if url.startswith(("postgres://", "postgresql://")):
        raise ValueError("the PostgreSQL backend is not available in this release; use an embedded store path")
    from echogate.store.sqlite_store import SQLiteStore

    return SQLiteStore(url.removeprefix("sqlite:"), max_group=max_group)


__all__ = ["Store", "StoreItem", "open_store", "record_id_for"]
