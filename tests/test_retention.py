"""Bounded disk: the pruning rules on real files with a fake clock, and what the server prunes for each face."""

import os
import time
from dataclasses import replace
from pathlib import Path

from fp8demo import config
from fp8demo.faces.generate.face import face as generate_face
from fp8demo.faces.kiosk.face import face as kiosk_face
from fp8demo.faces.kiosk.service import ATTRACT_FOLDER
from fp8demo.web.retention import Janitor, Rule, prune, retention_rules
from fp8demo.web.service import DemoService

HOUR = 3600.0
HASH = "0123456789abcdef" * 4  # Gradio's cache folders are named by a sha256


def touch(path: Path, age: float, now: float, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age, now - age))
    return path


def test_prune_keeps_the_newest_within_count_and_age(tmp_path):
    now = time.time()
    files = [touch(tmp_path / f"fp8demo-{i}-0000000{i}.png", age=i * HOUR, now=now) for i in range(6)]
    other = touch(tmp_path / "notes.txt", age=100 * HOUR, now=now)
    removed = prune(Rule(tmp_path, "fp8demo-*.png", max_files=4, max_age=2.5 * HOUR), now)
    assert sorted(removed) == sorted(files[3:])  # 3 too old (and 4, 5 beyond the count as well)
    assert [p.exists() for p in files] == [True, True, True, False, False, False]
    assert other.exists()  # only what the rule names
    assert prune(Rule(tmp_path, "fp8demo-*.png", max_files=1), now) == [files[1], files[2]]
    assert prune(Rule(tmp_path, "fp8demo-*.png"), now) == []  # no bound, nothing deleted


def test_gradio_cache_entries_are_its_hash_folders_only(tmp_path):
    now = time.time()
    old = touch(tmp_path / HASH / "image.webp", age=48 * HOUR, now=now)
    fresh = touch(tmp_path / HASH.replace("0", "f") / "image.jpeg", age=1, now=now)
    # a folder Gradio rewrote a file in recently is in use, whatever the folder's own time
    used = touch(tmp_path / HASH.replace("1", "e") / "a.webp", age=1, now=now)
    os.utime(used.parent, (now - 99 * HOUR, now - 99 * HOUR))
    foreign = touch(tmp_path / "someone-elses" / "file.bin", age=99 * HOUR, now=now)
    removed = prune(Rule(tmp_path, "*", max_files=10, max_age=24 * HOUR, gradio_cache=True), now)
    assert removed == [old.parent] and not old.parent.exists()
    assert fresh.exists() and used.exists() and foreign.exists()


def test_the_server_prunes_its_pngs_stale_tmp_files_and_own_gradio_cache(tmp_path, tiny_config):
    now = time.time()
    storage = replace(config.StorageConfig(), keep_pngs=3, keep_days=1, cache_files=2, cache_hours=1,
                      gradio_cache=tmp_path / "gradio")
    app_cfg = config.AppConfig(engine=tiny_config, outputs=tmp_path / "outputs", storage=storage)
    service = DemoService(app_cfg)
    pngs = [touch(service.output_dir / f"fp8demo-{i}-abcdef0{i}.png", age=i * 60, now=now) for i in range(5)]
    stale = touch(service.output_dir / "fp8demo-9-abcdef09.tmp", age=2 * HOUR, now=now)
    writing = touch(service.output_dir / "fp8demo-8-abcdef08.tmp", age=5, now=now)
    cache = [touch(storage.gradio_cache / f"{i:064x}" / "image.webp", age=i * 60, now=now) for i in range(4)]
    rules = retention_rules(generate_face(storage).keeping, service.output_dir, storage, storage.gradio_cache)
    Janitor(lambda: rules, every=60).run_once(now)
    assert [p.exists() for p in pngs] == [True, True, True, False, False]
    assert not stale.exists() and writing.exists()  # a write under way is left alone
    assert [p.exists() for p in cache] == [True, True, False, False]


def test_kiosk_keeps_take_home_pngs_for_their_ttl_and_few_attract_copies(tmp_path, tiny_config):
    now = time.time()
    keeping = kiosk_face(config.KioskConfig(take_ttl=HOUR, recent_creations=2)).keeping
    assert (keeping.pngs, keeping.max_age) == (200, HOUR)
    fresh = touch(tmp_path / "fp8demo-1-abcdef01.png", age=60, now=now)
    expired = touch(tmp_path / "fp8demo-2-abcdef02.png", age=HOUR + 60, now=now)
    copies = [touch(tmp_path / ATTRACT_FOLDER / f"fp8demo-{i}-abcdef0{i}.jpg", age=i, now=now) for i in range(4)]
    for rule in keeping.rules(tmp_path):
        prune(rule, now)
    assert fresh.exists() and not expired.exists()
    assert [p.exists() for p in copies] == [True, True, False, False]
    assert keeping.expired(expired) and not keeping.expired(fresh)


def test_defaults_keep_a_week_long_kiosk_under_two_gib():
    """The bound the docs promise, from the defaults and worst-case file sizes: however long the kiosk runs,
    disk use is capped by counts (the TTL and age only make it smaller)."""
    kiosk, storage = config.KioskConfig(), config.StorageConfig()
    png = 3.0 * 2**20  # a 1024x1024 PNG of noise (the tiny model), the worst case; a real picture is ~1.5 MiB
    cached = 0.6 * 2**20  # the largest display copy in Gradio's cache (a 1536 px JPEG or WebP)
    attract = 0.3 * 2**20  # a 768 px JPEG
    worst = kiosk.keep_pngs * png + storage.cache_files * cached + kiosk.recent_creations * attract
    assert worst < 2 * 2**30


def test_janitor_thread_runs_at_start_and_stops(tmp_path):
    now = time.time()
    old = touch(tmp_path / "fp8demo-1-abcdef01.png", age=10 * HOUR, now=now)
    janitor = Janitor(lambda: [Rule(tmp_path, "fp8demo-*.png", max_age=HOUR)], every=3600).start()
    try:
        deadline = time.monotonic() + 10
        while old.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not old.exists()  # a restart cleans what the last run left, without waiting an hour
    finally:
        janitor.stop()
    janitor._thread.join(timeout=5)
    assert not janitor._thread.is_alive()


def test_gradio_is_at_least_6_25():
    """Before 6.25 Gradio's queue kept every request's payload for the life of the process."""
    import gradio

    requirement = next(line for line in (Path(__file__).resolve().parent.parent / "requirements.txt").read_text()
                       .splitlines() if line.startswith("gradio"))
    assert requirement.startswith("gradio>=6.25")
    assert tuple(int(x) for x in gradio.__version__.split(".")[:2]) >= (6, 25)
