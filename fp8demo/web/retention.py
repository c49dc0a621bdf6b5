"""Bounded disk: the folders a long-running server writes into, pruned by age and by count.

A server may run for weeks: without this, every picture leaves a PNG, a display copy in Gradio's cache (which also
survives restarts) and whatever its face keeps besides. `prune` is pure file logic with the clock passed in;
`Janitor` runs the rules every few minutes in one daemon thread that `launch` starts. Each face says what it keeps
(`Keeping`); the platform adds the rules for its own files.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import StorageConfig

log = logging.getLogger(__name__)

# Gradio's cache keeps each file in a folder named by the hash of its bytes (processing_utils.save_*_to_cache).
GRADIO_ENTRY = re.compile(r"[0-9a-f]{32,64}")
STALE_TMP_AGE = 3600.0  # a PNG writer's .tmp this old belongs to a process that died mid-write


@dataclass(frozen=True)
class Rule:
    """Keep at most `max_files` entries of `folder` matching `pattern` (newest first) and none older than
    `max_age` seconds. `entries` picks what counts as one entry: files by default, Gradio's hash folders for
    its cache. None: no bound of that kind."""

    folder: Path
    pattern: str = "*"
    max_files: int | None = None
    max_age: float | None = None
    gradio_cache: bool = False


@dataclass(frozen=True)
class Keeping:
    """What a face keeps of its pictures in the outputs folder: at most `pngs` PNGs (the newest), none older than
    `max_age` seconds, which is also how long a picture may be downloaded. `folders` are its other rules, each
    folder relative to the outputs folder. None: no bound of that kind."""

    pngs: int | None = None
    max_age: float | None = None
    folders: tuple[Rule, ...] = ()

    def rules(self, outputs: Path) -> list[Rule]:
        """The rules for `outputs`: the PNGs, the PNG writer's .tmp files left by a process that died mid-write,
        and the face's own folders."""
        return [Rule(outputs, "fp8demo-*.png", self.pngs, self.max_age),
                Rule(outputs, "fp8demo-*.tmp", None, STALE_TMP_AGE),
                *(replace(rule, folder=outputs / rule.folder) for rule in self.folders)]

    def expired(self, path: Path, now: float | None = None) -> bool:
        """A PNG past its keeping time: gone for visitors even before the janitor deletes it."""
        try:
            age = (time.time() if now is None else now) - path.stat().st_mtime
        except OSError:
            return True
        return self.max_age is not None and age > self.max_age


def retention_rules(keeping: Keeping, outputs: Path, storage: StorageConfig,
                    gradio_cache: Path | None = None) -> list[Rule]:
    """What the janitor keeps: the face's pictures in `outputs`, and Gradio's cache when it is this app's own
    folder (None: another program's, which only Gradio's own age rule touches)."""
    rules = keeping.rules(outputs)
    if gradio_cache is not None:
        rules.append(Rule(gradio_cache, "*", storage.cache_files, storage.cache_hours * 3600, gradio_cache=True))
    return rules


def _entries(rule: Rule) -> Iterable[tuple[Path, float]]:
    """(entry, last modified) for each entry the rule governs."""
    try:
        children = list(rule.folder.glob(rule.pattern))
    except OSError:
        return []
    out = []
    for path in children:
        try:
            if rule.gradio_cache:
                if not (path.is_dir() and GRADIO_ENTRY.fullmatch(path.name)):
                    continue  # never anything Gradio did not name: the folder may be shared
                # Gradio rewrites a file each time it is shown again: the newest file is the entry's last use
                mtime = max((f.stat().st_mtime for f in path.iterdir()), default=path.stat().st_mtime)
            else:
                if not path.is_file():
                    continue
                mtime = path.stat().st_mtime
        except OSError:  # removed meanwhile (another pruner, Gradio's own delete_cache)
            continue
        out.append((path, mtime))
    return out


def prune(rule: Rule, now: float | None = None) -> list[Path]:
    """Delete what the rule no longer keeps; returns the deleted entries."""
    now = time.time() if now is None else now
    entries = sorted(_entries(rule), key=lambda e: e[1], reverse=True)  # newest first
    doomed = []
    for index, (path, mtime) in enumerate(entries):
        too_many = rule.max_files is not None and index >= rule.max_files
        too_old = rule.max_age is not None and now - mtime > rule.max_age
        if too_many or too_old:
            doomed.append(path)
    for path in doomed:
        try:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not delete %s", path)
    return doomed


class Janitor:
    """Runs `rules()` (re-evaluated each round: Gradio's cache folder is known only once the app is built) every
    `every` seconds in a daemon thread, and once at start so that a restart cleans what a crash left behind."""

    def __init__(self, rules: Callable[[], list[Rule]], every: float):
        self.rules, self.every = rules, every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> int:
        removed = 0
        for rule in self.rules():
            removed += len(prune(rule, now))
        if removed:
            log.info("pruned %d old files and cache entries", removed)
        return removed

    def start(self) -> Janitor:
        self._thread = threading.Thread(target=self._loop, name="janitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:  # a full disk or a permission problem must not end the pruning for good
                log.exception("pruning failed")
            if self._stop.wait(self.every):
                return
