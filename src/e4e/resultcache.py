"""A folder of finished result rows, each saved with a fingerprint of everything it depends on.

In: a folder, a key (one file per key: <folder>/<key>.json), a JSON-able fingerprint dict and row.
Out: the saved row when the fingerprint is equal, else None, so a rerun recomputes only what changed
(`e4e eval` keeps its rows in DIR/.cache). Writes are atomic (`e4e.outputs.atomic_write`).
"""
import json
from pathlib import Path


def cached(folder, key: str, fingerprint: dict) -> dict | None:
    """The row saved under `key` with this fingerprint, else None (missing, unreadable or stale)."""
    path = Path(folder) / f"{key}.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved.get("row") if saved.get("fingerprint") == fingerprint else None


def save_cached(folder, key: str, fingerprint: dict, row: dict) -> Path:
    from e4e.outputs import atomic_write
    text = json.dumps({"fingerprint": fingerprint, "row": row}, indent=1)
    return atomic_write(Path(folder) / f"{key}.json", lambda f: f.write(text), mode="w")
