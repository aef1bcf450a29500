"""`e4e serve` command line: registration, defaults, one-line errors (the server itself: test_serve_*)."""
import tempfile

import pytest

from e4e.cli import build_parser, main


def test_registered_with_localhost_defaults():
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.checkpoint, args.align) == ("127.0.0.1", 7860, None, None)
    assert build_parser().parse_args(["serve", "--no-align"]).align is False


def test_bad_arguments_are_one_line_and_leave_no_folder(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gradio", reason="the web extra is not installed: pip install 'e4e[web]'")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "unused"))  # the command sets it: restored afterwards
    assert main(["serve", "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == "e4e: error: --port must be in 1..65535, got 0"
    assert main(["serve", "--directions", str(tmp_path / "missing"), "--sefa", "0", "--ganspace", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"e4e: error: {tmp_path / 'missing'}: no such direction file or folder (--directions)"
    assert list(tmp_path.iterdir()) == []  # the temporary folder was removed
    assert main(["serve", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
