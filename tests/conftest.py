"""Shared test helpers: the official parity fixtures (discovery, weights, arrays), parity checks, seeding.

Fixture discovery has one home, `fixture_params(kind)`: every fixture set of a kind found in
$E4E_FIXTURES (default ../shared/fixtures/official) becomes one test parameter; a kind with no complete set
becomes a single "missing" parameter. A test calls `need(fx)` on its parameter: a missing set skips with
the reason locally and fails when E4E_REQUIRE_FIXTURES=1 (what .ci/run sets: CI has ../shared, so a
missing fixture there is a broken checkout, not a reason to stay green). `official_data(rel)` does the same
for the official editing files and photos in $E4E_OFFICIAL_DATA (default ../shared/official-data).
"""
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REQUIRE_ENV = "E4E_REQUIRE_FIXTURES"


def fixtures_dir() -> Path:
    return Path(os.environ.get("E4E_FIXTURES", REPO.parent / "shared" / "fixtures" / "official"))


def official_data_dir() -> Path:
    return Path(os.environ.get("E4E_OFFICIAL_DATA", REPO.parent / "shared" / "official-data"))


def fixtures_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def missing(reason: str):
    """Skip with the reason; fail instead when E4E_REQUIRE_FIXTURES is set."""
    if fixtures_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: missing fixtures fail)")
    pytest.skip(reason)


# Each kind: a regex over file names in the fixture folder (group 1: the set's size/suffix) and the
# companion files the set needs, by role. Add a kind here when the fixtures gain one.
FIXTURE_KINDS = {
    "generator": (r"generator(\d+)\.manifest\.json", {"npz": "generator{}.npz"}),
    "e4e": (r"e4e(\d+)_encoder\.manifest\.json", {"npz": "e4e{}.npz"}),
    "psp": (r"psp(\d+)_encoder\.manifest\.json", {"npz": "psp{}.npz"}),
    "wrapper": (r"e4e(\d+)_encoder\.manifest\.json",
                {"npz": "e4e{}.npz", "decoder": "generator{}_cm2_decoder.manifest.json"}),
    "wdisc": (r"wdisc(\w*)\.manifest\.json", {"npz": "wdisc{}.npz"}),
    "irse50": (r"irse50(\w*)\.manifest\.json", {"npz": "irse50{}.npz"}),
    "ada": (r"ada(\d+)\.manifest\.json", {"npz": "ada{}.npz"}),
}


@dataclass(frozen=True)
class FixtureSet:
    name: str  # e.g. "generator64"
    manifest: Path
    files: dict  # role -> Path

    def __getitem__(self, role: str) -> Path:
        return self.files[role]


@dataclass(frozen=True)
class MissingFixture:
    reason: str


def fixture_params(kind: str) -> list:
    """pytest params, one per complete fixture set of `kind`; incomplete sets and an empty kind become
    MissingFixture params (skip locally, fail under E4E_REQUIRE_FIXTURES)."""
    pattern, roles = FIXTURE_KINDS[kind]
    d = fixtures_dir()
    names = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
    out = []
    for name in names:
        m = re.fullmatch(pattern, name)
        if not m:
            continue
        files = {role: d / tmpl.format(m.group(1)) for role, tmpl in roles.items()}
        stem = name.split(".")[0].removesuffix("_encoder")
        absent = [p.name for p in files.values() if not p.is_file()]
        if absent:
            out.append(pytest.param(MissingFixture(f"{kind} fixture {stem}: {', '.join(absent)} not in {d}"),
                                    id=f"{stem}-incomplete"))
        else:
            out.append(pytest.param(FixtureSet(stem, d / name, files), id=stem))
    if not out:
        out.append(pytest.param(MissingFixture(f"no {kind} fixture ({pattern}) in {d} (set E4E_FIXTURES)"),
                                id="missing"))
    return out


def need(fx) -> FixtureSet:
    """The fixture set behind a fixture_params parameter; skips/fails (see `missing`) if there is none."""
    if isinstance(fx, MissingFixture):
        missing(fx.reason)
    return fx


def official_data(rel: str) -> Path:
    """A file under the official-data folder; skips/fails (see `missing`) if it is not there."""
    path = official_data_dir() / rel
    if not path.exists():
        missing(f"{path} not found (set E4E_OFFICIAL_DATA)")
    return path


def official_data_glob(pattern: str) -> list[Path]:
    d = official_data_dir()
    files = sorted(d.glob(pattern)) if d.is_dir() else []
    if not files:
        missing(f"no official {pattern} under {d} (set E4E_OFFICIAL_DATA)")
    return files


def load_module(path, name: str):
    """A Python file that is no package module (a script, bench/ tool, fixture recipe) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def state_dict_from_manifest(path: Path) -> dict:
    """Regenerate fixture weights with the fixture folder's own recipe.py (data, not project code)."""
    return load_module(Path(path).parent / "recipe.py", "_e4e_fixture_recipe").state_dict_from_manifest(path)


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


def assert_parity(what: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> float:
    """rel_err(got, want) <= tol, printing the measured error (`pytest -s ... | grep '^parity'` lists them:
    docs/testing.md's table). Tolerances are per check, from the measured error with a margin."""
    assert tuple(got.shape) == tuple(want.shape), (what, tuple(got.shape), tuple(want.shape))
    err = rel_err(got, want)
    print(f"parity {what} {err:.3g} (tol {tol:g})")
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"
    return err


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
