"""The single owner of cache entries: layout, index, records, locks, safety checks, manifest,
kernel artifacts, the atomic file helpers and the shared (Redis) store.

    files.py      atomic_write, publish_dir, remove_tree, staging_dir, read_json
    safety.py     refuse directories and entries someone else could have written
    faults.py     which errors are a filesystem refusing writes, and the sentence that says so
    manifest.py   an entry's file names, its manifest (size + sha256 of each file), verification
    artifacts.py  write and load an entry's files and a compiled kernel (imports TileLang)
    local.py      Store: one cache root and its parts (below), and the root's layout
    cache_dir.py  CacheDir: the root made and checked on first use; write refusals, scratch dir
    entries.py    Entries: where an entry is, load/save, TileLang's key notes, quarantine
    records.py    Records (one verdict per config) and Index (the warm path's fast key -> key)
    kernels.py    Kernels: where one config's compiled kernel is, in the cache or kept aside
    locks.py      Locks: one tuner per entry key, one timing process per device
    backend.py    SharedBackend: what a shared store's backend answers; RecordSource
    remote.py     the Redis backend, the blob format, signing
    shared.py     SharedStore: the shared store behind the local one (get, put, lock, sign; faults
                  are a warning and a miss); what a call does with it is ``engine.fleet``'s

The local and the shared store, side by side (only the record lookup is one interface,
``backend.RecordSource.get_record``: a local miss asks the shared store)::

                 local (Store's parts)                  shared (SharedBackend)
    record       records.read(ckey) / .write(record)    get_record(ckey); put with the entry
    entry        entries.load(path) / .save(result)     get_entry / get_files / put_entry
    lock         locks.entry(key): a file lock          lock / renew / unlock: an expiring token
    sign         none: the directory must be the user's  remote.sign, sign_record (HMAC-SHA256)
                 (safety.py), files by their manifest    over the entry's manifest, each record

Nothing is imported here: ``store.files`` and ``store.local`` stay light (the CLI and
``pytest --help`` use them), ``store.artifacts`` imports TileLang.
"""
