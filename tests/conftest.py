import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    return Path(os.environ.get("E4E_FIXTURES", REPO.parent / "shared" / "fixtures" / "official"))


def require_fixtures() -> Path:
    d = fixtures_dir()
    if not (d / "recipe.py").is_file():
        pytest.skip(f"official parity fixtures not found at {d} (set E4E_FIXTURES)")
    return d


def discover(pattern: str) -> list[Path]:
    """Fixture files matching a glob in the fixture folder; empty when the folder is absent."""
    d = fixtures_dir()
    return sorted(d.glob(pattern)) if d.is_dir() else []


def state_dict_from_manifest(path: Path) -> dict:
    """Regenerate fixture weights with the fixture folder's own recipe.py (data, not project code)."""
    spec = importlib.util.spec_from_file_location("_e4e_fixture_recipe", Path(path).parent / "recipe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.state_dict_from_manifest(path)


def manifest(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def load_npz(path: Path) -> dict:
    with np.load(path) as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, the fixtures' README tolerance measure."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
