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


def test_ctrl_c_while_the_server_is_still_starting_stops_it_cleanly(tmp_path, monkeypatch, capsys):
    """The page can answer before launch() returns; a Ctrl-C then (CI hit it) must still close the app,
    say it is stopping and remove the folder, not end as an interrupted command."""
    pytest.importorskip("gradio", reason="the web extra is not installed: pip install 'e4e[web]'")
    import signal

    from e4e.serve import app as web
    closed = []

    class App:
        local_url = "http://127.0.0.1:1/"

        def close(self):
            closed.append(True)

    def launch(editor, host, port, block=True, app=None):
        assert isinstance(app, App)  # the caller holds the app before the server starts
        raise KeyboardInterrupt

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "unused"))
    monkeypatch.setattr(web, "build_app", lambda editor: App())
    monkeypatch.setattr(web, "launch", launch)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main(["serve", "--sefa", "0", "--ganspace", "0"]) == 0
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    out = capsys.readouterr().out
    assert "e4e serve: stopping" in out and "e4e serve: removed" in out and closed == [True]
    assert list(tmp_path.iterdir()) == []
