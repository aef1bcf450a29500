"""A folder of finished result rows, each saved with a fingerprint of everything it depends on.

In: a folder, a key (one file per key: <folder>/<key>.json), a JSON-able fingerprint dict and row.
Out: the saved row when the fingerprint is equal, else None, so a rerun recomputes only what changed
(`e4e eval` keeps its rows in DIR/.cache). `saved` returns an entry whatever its fingerprint, for a
caller with a looser rule (a saved superset that serves a subset). Writes are atomic (`e4e.outputs.atomic_write`).
"""
import json
from pathlib import Path


def cached(folder, key: str, fingerprint: dict) -> dict | None:
    """The row saved under `key` with this fingerprint, else None (missing, unreadable or stale)."""
    entry = saved(folder, key)
    return entry["row"] if entry is not None and entry["fingerprint"] == fingerprint else None


def saved(folder, key: str) -> dict | None:
    """The entry saved under `key` ({"fingerprint": ..., "row": ...}), else None (missing or unreadable)."""
    try:
        entry = json.loads((Path(folder) / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and "fingerprint" in entry and "row" in entry else None


def save_cached(folder, key: str, fingerprint: dict, row: dict) -> Path:
    from e4e.outputs import atomic_write
    text = json.dumps({"fingerprint": fingerprint, "row": row}, indent=1)
    return atomic_write(Path(folder) / f"{key}.json", lambda f: f.write(text), mode="w")
