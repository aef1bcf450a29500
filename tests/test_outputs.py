"""e4e.outputs: atomic writes (fsync before the rename, nothing left on failure), the output-name guard,
and the writable-folder check."""
import os

import pytest
import torch

from e4e.errors import E4EError
from e4e.outputs import (atomic_torch_save, atomic_write, check_name, safe_name, safe_output_path, writable_dir,
                         writable_file)


def test_atomic_write_fsyncs_the_file_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    path = atomic_write(tmp_path / "sub" / "a.bin", lambda f: f.write(b"hello"))
    assert path.read_bytes() == b"hello"
    assert events[:2] == ["fsync", "replace"]  # the data is on disk before the name points at it
    assert events.count("fsync") >= 1
    atomic_write(tmp_path / "t.txt", lambda f: f.write("text"), mode="w")
    assert (tmp_path / "t.txt").read_text() == "text"
    atomic_write(tmp_path / "p.bin", lambda p: p.write_bytes(b"by name"), mode="path")
    assert (tmp_path / "p.bin").read_bytes() == b"by name"


def test_atomic_write_gives_the_mode_an_ordinary_write_would(tmp_path):
    """Not mkstemp's 0600: a new file gets 0666 less the umask (what open() gives); a replaced file keeps
    its mode."""
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    for mode in ("wb", "path"):
        new = atomic_write(tmp_path / f"new-{mode}.bin", (lambda f: f.write(b"y")) if mode == "wb" else
                           (lambda p: p.write_bytes(b"y")), mode=mode)
        assert new.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    atomic_write(kept, lambda f: f.write(b"new"))
    assert kept.read_bytes() == b"new" and kept.stat().st_mode & 0o777 == 0o640


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bin"]  # no temp file left behind


def test_atomic_torch_save_round_trips_and_refuses_a_folder(tmp_path):
    atomic_torch_save({"x": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["x"], torch.arange(3))
    (tmp_path / "d.pt").mkdir()
    with pytest.raises(E4EError, match="it is a folder"):
        atomic_torch_save({}, tmp_path / "d.pt")


@pytest.mark.parametrize("name", ["../x", "../../../etc/passwd", "/tmp/abs", "a/../../b", "a//b", "./a", "",
                                  "a\\..\\b", "C:evil", "a/\x00b", ".."])
def test_check_name_refuses_names_that_leave_the_folder(name):
    with pytest.raises(E4EError, match="not a safe output name"):
        check_name(name)


@pytest.mark.parametrize("name", ["a", "sub/c", "x~2", "img.v2", "pic:1", "..hidden", "a..b"])
def test_check_name_keeps_ordinary_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["C:evil", "a\\b", "sub/x\\y", "plain", "d:/x"])
def test_safe_name_makes_walked_names_acceptable(name):
    assert check_name(safe_name(name)) == safe_name(name)
    assert safe_name("plain/sub") == "plain/sub"


def test_safe_output_path_stays_inside_the_folder(tmp_path):
    out = tmp_path / "out"
    assert safe_output_path(out, "edit", "sub/c.png") == out / "edit" / "sub" / "c.png"
    with pytest.raises(E4EError):
        safe_output_path(out, "edit", "../../x.png")
    (out / "edit").mkdir(parents=True)
    (out / "edit" / "link").symlink_to(tmp_path)  # a folder inside -o that points outside it
    with pytest.raises(E4EError, match="outside the output folder"):
        safe_output_path(out, "edit", "link/x.png")


def test_writable_dir_and_file(tmp_path):
    assert writable_dir(tmp_path / "a" / "b").is_dir()
    assert not any(p.name.startswith(".e4e-write-test") for p in (tmp_path / "a" / "b").iterdir())
    (tmp_path / "f").write_text("x")
    with pytest.raises(E4EError, match=r"cannot write to .*f: it is a file"):
        writable_dir(tmp_path / "f")
    with pytest.raises(E4EError, match="cannot write to"):
        writable_dir(tmp_path / "f" / "sub")
    with pytest.raises(E4EError, match="it is a folder"):
        writable_file(tmp_path / "a")
    with pytest.raises(E4EError, match="exists"):
        writable_file(tmp_path / "f", overwrite=False)
    with pytest.raises(E4EError, match="cannot write to"):
        writable_dir(unwritable_dir(tmp_path) / "sub")


def unwritable_dir(tmp_path):
    """A folder this process cannot write in: a read-only one (non-root), /sys (root ignores modes); else skip."""
    if os.geteuid() != 0:
        ro = tmp_path / "read-only"
        ro.mkdir(exist_ok=True)
        ro.chmod(0o500)
        return ro
    try:
        os.mkdir("/sys/e4e-probe")
    except OSError:
        return type(tmp_path)("/sys")
    os.rmdir("/sys/e4e-probe")
    pytest.skip("no unwritable folder here (root, and /sys is writable)")
