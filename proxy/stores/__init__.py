"""The adapters behind the `proxy.ports` Protocols, and `build.build_stores`, the one place
that picks them.

`disk` (diskcache directories shared by processes) and `async_stores` (the entry and blob
ports over them); `ledger`, `ledger_book`, `ledger_keys`, `buckets`, `experiments` (SQLite)
and `embedded` (the ports over them); `flight_locks` (fcntl, and in memory); `memory*`:
dict-backed stores for unit tests of the service.
"""
