"""Result rows cached with a fingerprint: returned only for an equal fingerprint."""
from e4e.resultcache import cached, save_cached


def test_row_comes_back_only_for_the_same_fingerprint(tmp_path):
    fp = {"images": "abc", "steps": 3}
    assert cached(tmp_path, "e4e", fp) is None
    save_cached(tmp_path, "e4e", fp, {"mse": 0.25})
    assert cached(tmp_path, "e4e", dict(fp)) == {"mse": 0.25}
    assert cached(tmp_path, "e4e", {**fp, "steps": 4}) is None
    (tmp_path / "psp.json").write_text("{not json")
    assert cached(tmp_path, "psp", fp) is None
    assert not list(tmp_path.glob(".*.tmp"))


def test_saved_returns_an_entry_whatever_its_fingerprint(tmp_path):
    from e4e.resultcache import saved
    assert saved(tmp_path, "dirs") is None
    save_cached(tmp_path, "dirs", {"kinds": ["a", "b"]}, {"file": "d.safetensors"})
    assert saved(tmp_path, "dirs") == {"fingerprint": {"kinds": ["a", "b"]}, "row": {"file": "d.safetensors"}}
    (tmp_path / "other.json").write_text('{"row": 1}')  # not an entry save_cached writes
    assert saved(tmp_path, "other") is None
