"""The fixture rules of tests/conftest.py (docs/testing.md): a missing or incomplete fixture set skips with
its reason, and fails under E4E_REQUIRE_FIXTURES=1 (what .ci/run sets)."""
import pytest

import conftest


def test_missing_and_incomplete_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("E4E_FIXTURES", str(tmp_path / "absent"))
    (only,) = conftest.fixture_params("generator")
    assert isinstance(only.values[0], conftest.MissingFixture) and only.id == "missing"
    monkeypatch.setenv("E4E_FIXTURES", str(tmp_path))
    (tmp_path / "generator64.manifest.json").write_text("{}")
    (tmp_path / "generator128.manifest.json").write_text("{}")
    (tmp_path / "generator128.npz").write_bytes(b"")
    params = {p.id: p.values[0] for p in conftest.fixture_params("generator")}
    assert set(params) == {"generator128", "generator64-incomplete"}
    assert params["generator128"]["npz"] == tmp_path / "generator128.npz"
    assert "generator64.npz" in params["generator64-incomplete"].reason


def test_need_skips_locally_and_fails_when_required(monkeypatch):
    gone = conftest.MissingFixture("no generator fixture here")
    monkeypatch.delenv("E4E_REQUIRE_FIXTURES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no generator fixture here"):
        conftest.need(gone)
    monkeypatch.setenv("E4E_REQUIRE_FIXTURES", "1")
    with pytest.raises(pytest.fail.Exception, match="no generator fixture here.*E4E_REQUIRE_FIXTURES"):
        conftest.need(gone)
    with pytest.raises(pytest.fail.Exception, match="not found"):
        conftest.official_data("no/such/file.pt")
