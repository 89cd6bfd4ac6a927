"""The single owner of cache entries: layout, index, records, locks, safety checks, manifest,
kernel artifacts, the atomic file helpers and the shared (Redis) store.

    files.py      atomic_write, publish_dir, remove_tree, staging_dir, read_json
    safety.py     refuse directories and entries someone else could have written
    manifest.py   an entry's file names, its manifest (size + sha256 of each file), verification
    artifacts.py  write and load an entry's files and a compiled kernel (imports TileLang)
    local.py      Store: the cache root's layout, records, index, locks, quarantine, load/save
    remote.py     the fleet's shared Redis store behind the local one

Nothing is imported here: ``store.files`` and ``store.local`` stay light (the CLI and
``pytest --help`` use them), ``store.artifacts`` imports TileLang.
"""
