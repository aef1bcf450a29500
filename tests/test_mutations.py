"""tests/mutations.py (the mutation check, run by hand: docs/testing.md) stays in step with the source: every
mutation's snippet occurs exactly once where it says, and the tests it names exist."""
from pathlib import Path

from conftest import load_module

ROOT = Path(__file__).resolve().parents[1]


def load():
    return load_module(ROOT / "tests" / "mutations.py", "e4e_mutations")


def test_every_mutation_applies_once_and_names_real_tests():
    mod = load()
    names = [m.name for m in mod.MUTATIONS]
    assert len(names) == len(set(names)) >= 10
    for m in mod.MUTATIONS:
        text = (ROOT / "src" / "e4e" / m.path).read_text()
        assert text.count(m.old) == 1, m.name
        assert m.new != m.old, m.name
        files, _ = mod.split(m.tests)
        assert files and all((ROOT / f.split("::")[0]).is_file() for f in files), m.name


def test_baseline_selection_covers_every_mutation():
    mod = load()
    args = mod.baseline_tests(mod.MUTATIONS)
    files, expr = mod.split(args)
    for m in mod.MUTATIONS:
        f, k = mod.split(m.tests)
        assert set(f) <= set(files) and (k is None or f"({k})" in expr)
