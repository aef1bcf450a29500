"""Writing outputs safely: one home for the three rules every command follows.

- `atomic_write(path, writer)` / `atomic_torch_save(obj, path)`: the file is written to a temp file in the
  same folder, flushed and fsync'ed, then renamed over `path` (and the folder fsync'ed where the OS allows),
  so a crash or kill -9 leaves either the old file or the new one, never a broken one.
- `check_name(name)` / `safe_output_path(out_dir, *parts)`: names that come from inputs (image paths,
  entries of a shared latents.npz) become output paths only when they stay inside the output folder:
  no absolute paths, no '..', no drive letters or backslashes. Anything else is an E4EError.
- `writable_dir(path)`: create the output folder and prove it writable before the work starts, so a bad
  `-o` costs one line ("cannot write to DIR: ...") instead of a traceback after minutes of compute.
"""
import os
import re
import tempfile
from pathlib import Path, PurePosixPath

from e4e.errors import E4EError


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; not every OS/file system lets a folder be opened (Windows), so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_file_mode() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: done once, at import, before any threads
    os.umask(mask)
    return 0o666 & ~mask


_NEW_FILE_MODE = _new_file_mode()


def atomic_write(path, writer, mode: str = "wb") -> Path:
    """Call writer(f) on a temp file next to `path`, fsync it, then rename it over `path`.
    writer gets an open file object (binary unless mode='w'), or with mode='path' the temp file's path
    (for libraries that write by name, e.g. safetensors). The temp file is removed on any failure."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise E4EError(f"cannot write to {folder}: {e.strerror or e}") from None
    tmp = Path(tmp)
    try:
        if mode == "path":
            os.close(fd)
            writer(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        else:
            with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
                writer(f)
                f.flush()
                os.fsync(f.fileno())
        # mkstemp makes the file 0600: give it the mode an ordinary open() would (or the replaced file's)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.is_file() else _NEW_FILE_MODE)
        os.replace(tmp, path)
    except IsADirectoryError:
        raise E4EError(f"cannot write {path}: it is a folder") from None
    except OSError as e:
        raise E4EError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(folder)
    return path


def atomic_torch_save(obj, path) -> Path:
    import torch
    return atomic_write(path, lambda f: torch.save(obj, f))


def check_name(name: str, where: str = "name") -> str:
    """A name that will become part of an output path: a relative POSIX path with no '..' or '.' parts,
    no absolute path, drive letter (C:), backslash or NUL. Returns it unchanged, raises E4EError otherwise."""
    text = str(name)
    bad = (not text or "\x00" in text or "\\" in text or text.startswith("/") or re.match(r"[A-Za-z]:", text)
           or any(part in ("", ".", "..") for part in text.split("/")))
    if bad or PurePosixPath(text).is_absolute():
        raise E4EError(f"{where}: {text!r} is not a safe output name (absolute paths, '..', '\\' and drive letters "
                       "are refused: it would write outside the output folder)")
    return text


def safe_name(text: str) -> str:
    """An input-derived name (a relative path from a folder walk) made acceptable to check_name: the
    characters that are legal in Linux file names but unsafe in output paths (backslash, a leading
    drive letter) become '_'. Names from a folder walk never hold '..' or absolute parts."""
    text = text.replace("\\", "_").replace("\x00", "_")
    return text[0] + "_" + text[2:] if re.match(r"[A-Za-z]:", text) else text


def safe_output_path(out_dir, *parts: str) -> Path:
    """out_dir / parts... after checking every part, and that the result stays inside out_dir."""
    out_dir = Path(out_dir)
    for p in parts:
        check_name(p, f"output name under {out_dir}")
    path = out_dir.joinpath(*parts)
    root = os.path.realpath(out_dir)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise E4EError(f"{path}: resolves outside the output folder {out_dir} (a symlink?)")
    return path


def writable_dir(path) -> Path:
    """Create folder `path` (and parents) and check a file can be written in it; E4EError otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise E4EError(f"cannot write to {path}: it is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".e4e-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise E4EError(f"cannot write to {path}: {e.strerror or e}") from None
    return path


def writable_file(path, overwrite: bool = True) -> Path:
    """Check that file `path` can be written: not a folder, its folder writable, not there unless overwrite."""
    path = Path(path)
    if path.is_dir():
        raise E4EError(f"cannot write {path}: it is a folder")
    if path.exists() and not overwrite:
        raise E4EError(f"{path} exists (pass --overwrite to replace it)")
    writable_dir(path.parent if str(path.parent) else Path("."))
    return path
