"""Verdict stores: where every gated transcript and its provenance is recorded."""
from __future__ import annotations

from echogate.store.base import Store, StoreItem, record_id_for


def open_store(url: str, max_group: int = 4096) -> Store:
    """Open the store named by `url`: `postgresql://...` is PostgreSQL (several replicas may share
    it); a file path or `sqlite:PATH` is the embedded SQLite store."""
    if url.startswith(("postgres://", "postgresql://")):
        from echogate.store.postgres_store import PostgresStore

        return PostgresStore(url, max_group=max_group)
    from echogate.store.sqlite_store import SQLiteStore

    return SQLiteStore(url.removeprefix("sqlite:"), max_group=max_group)


__all__ = ["Store", "StoreItem", "open_store", "record_id_for"]
