"""Where a benchmark's JSON goes: <folder>/<name>-<device>.json, one file per benchmark and device."""

from __future__ import annotations

import json
from pathlib import Path

from fp8demo import bench


def write_result(result: dict, folder: str | Path, name: str, device_name: str) -> Path:
    """Write `result` as <folder>/<name>-<device slug>.json and return the path."""
    path = Path(folder) / f"{name}-{bench.device_slug({'device': {'name': device_name}})}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path
