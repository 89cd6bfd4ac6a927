"""``python -m pytest_tlautotune cache list|show|clear|prune|export``: look into and tidy the tuning
cache, and write its results into TileLang's own autotuner cache (``export``).

Reads the layout documented in ``store/local.py`` without importing torch or TileLang
(``export`` without a DIR imports TileLang to ask where its cache is), and never creates the
cache directory. Removal renames a directory aside before deleting it (a reader sees the entry
or nothing) and never follows a symlink out of the cache: links are unlinked, not entered.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .engine.device_compile import BOOK_DIR
from .report.terminal import text_table
from .settings import ini_option, user_cache_dir
from .store.files import human_size, read_json, remove_tree
from .store.manifest import BEST_CONFIG_PATH, LATENCY_PATH, RECORD_PATH

if TYPE_CHECKING:
    from .store.backend import SharedBackend

# What `cache clear` empties, with the noun it counts each folder's items by.
CACHE_SUBDIRS = {"entries": "entries", "candidates": "candidate records", "kernels": "kernels",
                 "quarantine": "quarantined entries", "index": "index files",
                 BOOK_DIR: "remembered NVRTC header prefixes"}
DAY_S = 86400.0


def default_cache_dir(cwd: Path | None = None) -> str:
    """What pytest run from ``cwd`` would use: the ini file's ``tl_cache_dir`` (relative to that
    file), else $TL_AUTOTUNE_CACHE_DIR, else ~/.cache/tlautotune (or under $XDG_CACHE_HOME)."""
    cwd = Path.cwd() if cwd is None else cwd
    found = ini_option(cwd, "tl_cache_dir")
    if found:
        inipath, value = found
        return os.path.join(inipath.parent, os.path.expanduser(value))
    env = os.environ.get("TL_AUTOTUNE_CACHE_DIR")
    return os.path.abspath(os.path.expanduser(env)) if env else user_cache_dir()


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Entry:
    """What the CLI shows of one ``entries/<key>/`` directory."""

    key: str
    path: Path
    record: dict
    config: Any  # best_config.json: JSON, a dict when the entry is whole
    latency: dict
    size: int
    tuned_at: float  # record.json's tuned_at, else the directory's mtime

    @property
    def device(self) -> str:
        info = self.record.get("device_info") or {}
        name = info.get("device") if isinstance(info, dict) else None
        kind = self.record.get("device") or "?"
        return f"{name} ({kind})" if name else str(kind)

    @property
    def ckeys(self) -> set[str]:
        """The candidate keys (records and kernels) this entry's tuning used."""
        cands = self.record.get("candidates") or []
        return {c["ckey"] for c in cands if isinstance(c, dict) and isinstance(c.get("ckey"), str)}


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path``, links not followed."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def read_entry(path: Path) -> Entry:
    record = read_json(path / RECORD_PATH)
    record = record if isinstance(record, dict) else {}
    latency = read_json(path / LATENCY_PATH)
    tuned_at = record.get("tuned_at")
    if not isinstance(tuned_at, (int, float)):
        try:
            tuned_at = path.lstat().st_mtime
        except OSError:
            tuned_at = 0.0
    return Entry(key=path.name, path=path, record=record, config=read_json(path / BEST_CONFIG_PATH),
                 latency=latency if isinstance(latency, dict) else {}, size=tree_size(path), tuned_at=tuned_at)


class StoreCatalog:
    """The CLI's view of a shared store (``store.backend.SharedBackend``: ``store.remote.RedisStore``):
    its entries as :class:`Entry`."""

    def __init__(self, store: SharedBackend):
        self.store = store

    def __str__(self) -> str:
        return str(self.store)

    def list_entries(self) -> list[Entry]:
        out = []
        for key, doc, size in self.store.list():
            doc = doc or {}
            record = doc.get("record") if isinstance(doc.get("record"), dict) else {}
            latency = doc.get("latency") if isinstance(doc.get("latency"), dict) else {}
            tuned_at = record.get("tuned_at") or doc.get("stored_at") or 0.0
            out.append(Entry(key=key, path=f"{self.store} entry:{key}", record=record, config=doc.get("config"),
                             latency=latency, size=size, tuned_at=tuned_at))
        return sorted(out, key=lambda e: (e.tuned_at, e.key))


def list_entries(root: Path | StoreCatalog) -> list[Entry]:
    """Every entry under ``root``, oldest first; staging and trash directories (dot names) are skipped."""
    if isinstance(root, StoreCatalog):
        return root.list_entries()
    entries = root / "entries"
    if not entries.is_dir() or entries.is_symlink():
        return []
    paths = [p for p in entries.iterdir() if not p.name.startswith(".") and p.is_dir() and not p.is_symlink()]
    return sorted((read_entry(p) for p in paths), key=lambda e: (e.tuned_at, e.key))


def is_test(nodeid: object, what: str) -> bool:
    """Whether ``what`` names the test ``nodeid``: its id (``test_gemm.py::test_gemm``, with or
    without the directories in front, a ``[call N]`` suffix ignored), its file, or its name
    (``test_gemm``, each parametrization included)."""
    if not isinstance(nodeid, str) or not what:
        return False
    what = re.sub(r"\[call \d+\]$", "", what)
    name = nodeid.rsplit("::", 1)[-1]
    if name == what or name.startswith(what + "["):
        return True
    starts = [0] + [i + 1 for i, ch in enumerate(nodeid.split("::", 1)[0]) if ch == "/"]
    return any(nodeid[i:] == what or nodeid[i:].startswith((what + "[", what + "::")) for i in starts)


def find_entries(root: Path | StoreCatalog, what: str) -> tuple[list[Entry], str]:
    """The entries ``what`` names: the one whose key starts with it, else every entry tuned for the
    test it names (:func:`is_test`), oldest first; else ([], why)."""
    entries = list_entries(root)
    by_key = [e for e in entries if e.key.startswith(what)]
    if len(by_key) == 1:
        return by_key, ""
    by_test = [e for e in entries if is_test(e.record.get("nodeid"), what)]
    if by_test:
        return by_test, ""
    if not by_key:
        return [], f"no cache entry with a key starting with {what!r} in {root}, and none tuned for a test {what!r}"
    keys = ", ".join(e.key[:16] for e in by_key)
    return [], f"{len(by_key)} entries start with {what!r} ({keys}); give a longer prefix or a test id"


# ----------------------------------------------------------------------------- formatting


def human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for limit, div, unit in ((120, 1, "s"), (7200, 60, "min"), (2 * DAY_S, 3600, "h")):
        if seconds < limit:
            return f"{seconds / div:.0f} {unit}"
    return f"{seconds / DAY_S:.1f} d"


def config_text(config: object) -> str:
    if not isinstance(config, dict):
        return "-" if config is None else str(config)
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in config.items())


def ms(value: object) -> str:
    return f"{value:.4g} ms" if isinstance(value, (int, float)) else "-"


def table(rows: list[tuple], out: TextIO) -> None:
    for line in text_table(rows):
        out.write(line + "\n")


# ----------------------------------------------------------------------------- removal


@contextlib.contextmanager
def _unless_tuning(root: Path, key: str) -> Iterator[bool]:
    """Hold the key's tuning lock, taken without waiting; yields False when a tuner holds it."""
    from filelock import FileLock, Timeout

    locks = root / "locks"
    if not locks.is_dir() or locks.is_symlink():
        yield True
        return
    lock = FileLock(str(locks / f"{key}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


# ----------------------------------------------------------------------------- commands


def cmd_list(root: Path, args: argparse.Namespace, out: TextIO) -> int:
    entries = list_entries(root)
    if args.json:
        data = [{"key": e.key, "test": e.record.get("nodeid"), "kernel": e.record.get("program"),
                 "config": e.config, "latency_ms": e.latency.get("latency"), "device": e.device,
                 "size": e.size, "tuned_at": e.tuned_at} for e in entries]
        out.write(json.dumps(data, indent=1) + "\n")
        return 0
    if not entries:
        out.write(f"no cache entries in {root}\n")
        return 0
    now = time.time()
    rows = [("key", "test", "kernel", "config", "latency", "device", "size", "age")]
    for e in entries:
        rows.append((e.key[:12], e.record.get("nodeid") or "?", e.record.get("program") or "?", config_text(e.config),
                     ms(e.latency.get("latency")), e.device, human_size(e.size), human_age(now - e.tuned_at)))
    table(rows, out)
    total = sum(e.size for e in entries)
    noun = "entry" if len(entries) == 1 else "entries"
    where = root / "entries" if isinstance(root, Path) else root
    out.write(f"{len(entries)} {noun}, {human_size(total)} in {where}\n")
    return 0


def cmd_show(root: Path, args: argparse.Namespace, out: TextIO) -> int:
    found, why = find_entries(root, args.key)
    if not found:
        sys.stderr.write(f"tlautotune: {why}\n")
        return 1
    if len(found) > 1:
        tests = sorted({str(e.record.get("nodeid")) for e in found})
        out.write(f"{len(found)} entries for {', '.join(tests)}, oldest first (one per autotune call, shape or "
                  f"version of the kernel)\n\n")
    for n, entry in enumerate(found):
        if n:
            out.write("\n")
        show_entry(entry, out)
    return 0


def show_entry(entry: Entry, out: TextIO) -> None:
    r = entry.record
    when = datetime.datetime.fromtimestamp(entry.tuned_at).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    samples = entry.latency.get("samples") or []
    pairs = [
        ("key", entry.key), ("path", entry.path), ("test", r.get("nodeid") or "?"),
        ("kernel", r.get("program") or "?"), ("config", config_text(entry.config)),
        ("latency", f"{ms(entry.latency.get('latency'))} (median of {len(samples)} samples)"),
        ("reference", ms(entry.latency.get("ref_latency"))), ("device", entry.device),
        ("tuned at", f"{when} ({human_age(time.time() - entry.tuned_at)} ago)"),
        ("tuning time", f"{r['tuning_s']:.1f} s" if isinstance(r.get("tuning_s"), (int, float)) else "-"),
        ("compile args", json.dumps(r.get("compile_args"), sort_keys=True) if r.get("compile_args") else "-"),
        ("size", human_size(entry.size)),
    ]
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        out.write(f"{k.ljust(width)}  {v}\n")
    cands = [c for c in r.get("candidates") or [] if isinstance(c, dict)]
    out.write(f"\ncandidates ({len(cands)}):\n")
    if cands:
        rows = [("config", "status", "median", "compile", "ckey", "reason")]
        for c in cands:
            compile_s = f"{c['compile_s']:.2f} s" if isinstance(c.get("compile_s"), (int, float)) else "-"
            rows.append((config_text(c.get("config")), c.get("status") or "?", ms(c.get("median_ms")), compile_s,
                         str(c.get("ckey") or "-")[:12], c.get("reason") or ""))
        table(rows, out)


def cmd_clear(root: Path, args: argparse.Namespace, out: TextIO) -> int:
    if isinstance(root, StoreCatalog):
        out.write(f"removed {root.store.clear()} keys (entries, signed files, candidate records) from {root}\n")
        return 0
    counts = {}
    for sub, noun in CACHE_SUBDIRS.items():
        directory = root / sub
        if directory.is_symlink():
            os.unlink(directory)  # a link out of the cache: drop the link, keep what it points to
            continue
        if not directory.is_dir():
            continue
        n = 0
        for child in list(directory.iterdir()):
            # A quarantined link keeps its reason beside it (<name>.WHY): one quarantined entry, not two.
            counted = not child.name.startswith(".") and not (sub == "quarantine" and child.name.endswith(".WHY"))
            n += remove_tree(child) and counted
        counts[noun] = n
    what = ", ".join(f"{n} {noun}" for noun, n in counts.items())
    out.write(f"removed {what or 'nothing'} from {root}\n")
    return 0


def cmd_prune(root: Path, args: argparse.Namespace, out: TextIO) -> int:
    cutoff = time.time() - args.older_than * DAY_S
    if isinstance(root, StoreCatalog):
        return _prune_store(root, cutoff, args, out)
    entries = list_entries(root)
    old = [e for e in entries if e.tuned_at < cutoff]
    kept = [e for e in entries if e.tuned_at >= cutoff]
    removed, busy = [], []
    for e in old:
        with _unless_tuning(root, e.key) as free:
            if free:
                remove_tree(e.path)
                removed.append(e)
            else:  # a tuner is writing this key right now
                busy.append(e)
    in_use = set().union(*(e.ckeys for e in kept + busy)) if kept or busy else set()
    freed = set().union(*(e.ckeys for e in removed)) if removed else set()
    n_cands = _prune_candidates(root, freed, in_use, cutoff)
    n_index = _prune_index(root, {e.key for e in removed}, {e.key for e in kept + busy}, cutoff)
    n_quarantine = _prune_old(root / "quarantine", cutoff)
    for e in removed:
        age = human_age(time.time() - e.tuned_at)
        out.write(f"removed {e.key[:12]}  {e.record.get('nodeid') or '?'}  ({age} old)\n")
    for e in busy:
        out.write(f"skipped {e.key[:12]}: it is being tuned right now\n")
    out.write(f"pruned {len(removed)} of {len(entries)} entries older than {args.older_than:g} days "
              f"and {n_cands} unreferenced candidate records/kernels, {n_index} index files pointing to no "
              f"entry and {n_quarantine} quarantined files older than that\n")
    return 0


def _prune_index(root: Path, removed: set[str], existing: set[str], cutoff: float) -> int:
    """Remove the fast-index files of the entries just removed, and old ones pointing to no entry
    (a quarantined one, say); a young dangling one may belong to a tuner about to store its entry."""
    directory = root / "index"
    if not directory.is_dir() or directory.is_symlink():
        return 0
    n = 0
    for child in list(directory.iterdir()):
        if child.name.startswith(".") or child.is_symlink():
            continue
        data = read_json(child)
        key = data.get("key") if isinstance(data, dict) else None
        if key in existing:
            continue
        try:
            old = child.lstat().st_mtime < cutoff
        except OSError:
            continue
        if key in removed or old:
            n += remove_tree(child)
    return n


def _prune_old(directory: Path, cutoff: float) -> int:
    """Remove what ``directory`` holds that is older than the cutoff."""
    if not directory.is_dir() or directory.is_symlink():
        return 0
    n = 0
    for child in list(directory.iterdir()):
        try:
            if child.lstat().st_mtime < cutoff:
                n += remove_tree(child)
        except OSError:
            continue
    return n


def _prune_store(root: StoreCatalog, cutoff: float, args: argparse.Namespace, out: TextIO) -> int:
    """Entries older than the cutoff go with their signed files; records go once no entry uses them
    (the store writes an entry and its records in one transaction, so none is in flight)."""
    entries = list_entries(root)
    old = [e for e in entries if e.tuned_at < cutoff]
    in_use = set().union(*(e.ckeys for e in entries if e.tuned_at >= cutoff))
    root.store.delete(keys=[e.key for e in old])
    unused = [c for c in root.store.record_keys() if c not in in_use]
    n_records = root.store.delete(ckeys=unused)
    for e in old:
        age = human_age(time.time() - e.tuned_at)
        out.write(f"removed {e.key[:12]}  {e.record.get('nodeid') or '?'}  ({age} old)\n")
    out.write(f"pruned {len(old)} of {len(entries)} entries older than {args.older_than:g} days "
              f"and {n_records} unreferenced candidate records from {root}\n")
    return 0


def _prune_candidates(root: Path, freed: set[str], in_use: set[str], cutoff: float) -> int:
    """Remove candidate records and kernels no remaining entry uses.

    Those of the entries just removed go at once; other unreferenced ones only
    once they are older than the cutoff too, since a running tuner may be
    writing them before its entry exists.
    """
    n = 0
    for sub, suffix in (("candidates", ".json"), ("kernels", "")):
        directory = root / sub
        if not directory.is_dir() or directory.is_symlink():
            continue
        for child in list(directory.iterdir()):
            ckey = child.name.removesuffix(suffix) if suffix else child.name
            if child.name.startswith(".") or ckey in in_use:
                continue
            try:
                mtime = child.lstat().st_mtime
            except OSError:
                continue
            if ckey in freed or mtime < cutoff:
                n += remove_tree(child)
    return n


def cmd_export(root: Path | StoreCatalog, args: argparse.Namespace, out: TextIO) -> int:
    """Write entries into TileLang's autotuner cache (``store/tilelang_layout.py``), each under the
    key production code's ``@tilelang.autotune`` looks up; say what was written, and why not."""
    from .store.tilelang_layout import export_entry

    names = list(args.targets)
    if len(names) > (1 if args.all else 2) or not (args.all or names):
        sys.stderr.write("tlautotune: cache export takes KEY_OR_TEST [DIR] or --all [DIR]\n")
        return 2
    what = None if args.all else names.pop(0)
    if what is None:
        entries = list_entries(root)
    else:
        entries, why = find_entries(root, what)
        if not entries:
            sys.stderr.write(f"tlautotune: {why}\n")
            return 1
    if names:
        dest, version = Path(names[0]).expanduser(), None
    else:
        dest, version = _tilelang_cache_dir()
    written = failed = 0
    with _entries_on_disk(root, entries) as on_disk:
        for entry, path in on_disk:
            label = f"{entry.key[:12]}  {entry.record.get('nodeid') or '?'}  ({entry.record.get('program') or '?'})"
            if path is None:
                out.write(f"not exported {label}: {_NO_FILES}\n")
                failed += 1
                continue
            for done in export_entry(path, dest, force=args.force, tilelang_version=version):
                if done.written is not None:
                    written += 1
                    out.write(f"exported {label} -> {done.written}\n")
                else:
                    failed += done.tilelang_key is not None
                    out.write(f"not exported {label}: {done.why_not}\n")
    out.write(f"{written} result(s) written into {dest}\n")
    return 0 if written and not failed else 1


_NO_FILES = ("the store holds this entry as data only (its kernel travels with TL_AUTOTUNE_STORE_SECRET set); "
             "export it from a cache directory that holds it")


def _tilelang_cache_dir() -> tuple[Path, str]:
    """TileLang's autotuner cache directory (``AutoTuner._get_cache_dir()``, under $TILELANG_CACHE_DIR)
    and the installed TileLang's version: importing TileLang costs seconds, so only without a DIR."""
    import tilelang
    from tilelang.autotuner.tuner import AutoTuner

    return Path(AutoTuner._get_cache_dir()), tilelang.__version__


@contextlib.contextmanager
def _entries_on_disk(root: Path | StoreCatalog, entries: list[Entry]) -> Iterator[list[tuple[Entry, Path | None]]]:
    """Each entry's directory: in the cache, or the store's signed files unpacked into a temporary
    directory (verified as a hit verifies them; None where the store has no files for it)."""
    if not isinstance(root, StoreCatalog):
        yield [(e, e.path) for e in entries]
        return
    import tempfile

    from .store.remote import SECRET_ENV, SignatureError, unpack

    secret = os.environ.get(SECRET_ENV)
    with tempfile.TemporaryDirectory(prefix="tlautotune-export-") as tmp:
        paths = []
        for e in entries:
            files = root.store.get_files(e.key) if secret else None
            path = Path(tmp) / "entries" / e.key
            try:
                if files is not None:
                    unpack(secret, e.key, files, path)
            except (OSError, SignatureError) as exc:
                sys.stderr.write(f"tlautotune: the store's files of {e.key[:12]} were refused: {exc}\n")
                files = None
            paths.append((e, path if files is not None else None))
        yield paths


def _non_negative_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days >= 0 (e.g. 30 or 0.5)")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", metavar="DIR", default=None,
                        help="the cache (default: tl_cache_dir of the pytest ini file found from here upward, "
                             "else $TL_AUTOTUNE_CACHE_DIR, else ~/.cache/tlautotune)")
    common.add_argument("--store", metavar="URL", default=None,
                        help="work on the shared store redis://host:port/db instead of a cache directory")
    parser = argparse.ArgumentParser(prog="tlautotune",
                                     description="Inspect and tidy the cache; read the test history.")
    groups = parser.add_subparsers(dest="group", required=True, metavar="cache|history")
    cache = groups.add_parser("cache", help="list, show, clear or prune tuned entries")
    commands = cache.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser("list", parents=[common], help="one line per tuned entry")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(func=cmd_list)
    p = commands.add_parser("show", parents=[common], help="one entry in full, with every candidate")
    p.add_argument("key", metavar="KEY_OR_TEST",
                   help="the entry's key or a unique prefix of it, or a test: its id (test_gemm.py::test_gemm), "
                        "file or name; every entry tuned for that test is shown (see `cache list`)")
    p.set_defaults(func=cmd_show)
    p = commands.add_parser("clear", parents=[common], help="remove every entry, candidate record and kernel")
    p.set_defaults(func=cmd_clear)
    p = commands.add_parser("prune", parents=[common], help="remove entries older than --older-than DAYS")
    p.add_argument("--older-than", metavar="DAYS", type=_non_negative_days, required=True,
                   help="age in days (by the entry's tuning time); fractions allowed")
    p.set_defaults(func=cmd_prune)
    p = commands.add_parser("export", parents=[common],
                            help="write entries into TileLang's own autotuner cache, where production code's "
                                 "@tilelang.autotune finds them without tuning")
    p.add_argument("targets", nargs="*", metavar="KEY_OR_TEST [DIR]",
                   help="an entry (key, unique key prefix, or test as for `show`), then where TileLang's cache "
                        "is (default: TileLang's autotuner cache dir, under $TILELANG_CACHE_DIR)")
    p.add_argument("--all", action="store_true", help="every entry")
    p.add_argument("--force", action="store_true", help="replace a result already at DIR/<TileLang's key>")
    p.set_defaults(func=cmd_export)
    from .history.commands import add_commands

    add_commands(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.group == "history":
        from .history.commands import run

        return run(args)
    if args.store:
        return _on_store(args.store, args)
    root = Path(args.cache_dir or default_cache_dir()).expanduser()
    if root.is_symlink():
        sys.stderr.write(f"tlautotune: the cache directory {root} is a symlink; pass the real directory "
                         f"with --cache-dir\n")
        return 2
    if not root.is_dir():
        if args.command in ("show", "export"):
            sys.stderr.write(f"tlautotune: there is no cache at {root}\n")
            return 1
        sys.stdout.write(f"no cache at {root} (nothing tuned yet, or pass --cache-dir)\n")
        return 0
    try:
        status = args.func(root, args, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`cache show KEY | head`): as the docs of `signal` advise, point stdout at
        # /dev/null so the interpreter's final flush does not fail again, and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command its pipe closed
    return status


def _on_store(url: str, args: argparse.Namespace) -> int:
    from .store.remote import RedisStore, StoreError, StoreUrlError, check_url

    try:
        check_url(url, "--store")
    except StoreUrlError as exc:
        sys.stderr.write(f"tlautotune: {exc}\n")
        return 2
    catalog = StoreCatalog(RedisStore(url, timeout=float(os.environ.get("TL_AUTOTUNE_STORE_TIMEOUT") or 10)))
    try:
        return args.func(catalog, args, sys.stdout)
    except StoreError as exc:
        sys.stderr.write(f"tlautotune: the store {catalog} failed: {exc}\n")
        return 1
