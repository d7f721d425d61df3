"""Store adapters for the `proxy.ports` BlobStore and EntryStore ports.

`disk` holds the embedded default (diskcache directories shared by processes);
`memory` holds dict-backed stores for unit tests of the service.
"""
