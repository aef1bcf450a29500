"""e4e.serve.app through its client API: a real Gradio server on 127.0.0.1, driven with gradio_client."""
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import e4e
from e4e.errors import E4EError

gradio_client = pytest.importorskip("gradio_client", reason="the web extra is not installed: pip install 'e4e[web]'")
pytest.importorskip("gradio", reason="the web extra is not installed: pip install 'e4e[web]'")

from e4e.serve import app as web  # noqa: E402
from e4e.serve import core  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    editor = core.load_editor(tmp_path_factory.mktemp("serve"), ganspace_samples=2000, log=lambda *a: None)
    with pytest.MonkeyPatch.context() as mp:  # build_app sets GRADIO_TEMP_DIR: undone after these tests
        mp.setenv("GRADIO_TEMP_DIR", os.environ.get("GRADIO_TEMP_DIR", ""))
        app, url = web.launch(editor, port=free_port(), block=False)
        yield editor, app, url
        app.close()


def client(url, tmp_path):
    return gradio_client.Client(url, verbose=False, download_files=str(tmp_path))


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def zeros(editor, first=0.0):
    return [first] + [0.0] * (len(editor.directions) - 1)


def test_binds_localhost_with_the_endpoints(server):
    editor, app, url = server
    assert url.startswith("http://127.0.0.1:")
    api = gradio_client.Client(url, verbose=False).view_api(return_format="dict", print_info=False)
    assert {"/invert_upload", "/invert_sample", "/edit", "/reset", "/refine", "/export"} <= set(api["named_endpoints"])


def test_invert_edit_reset_export(server, tmp_path):
    editor, app, url = server
    c = client(url, tmp_path)
    sample = core.sample_images()[0]
    shown_input, recon, edited, status = c.predict(gradio_client.handle_file(str(sample)), False, *zeros(editor),
                                                   api_name="/invert_upload")
    assert sample.stem in status and "distortion" in status
    assert np.array_equal(pixels(recon), pixels(edited))  # sliders at 0: the edit is the inversion
    end = editor.directions[0].limit  # the first slider at its end (how far an edit goes is the model's)
    moved = c.predict(*zeros(editor, end), api_name="/edit")
    assert np.abs(pixels(moved) - pixels(recon)).mean() > 1.0
    *slider_values, back = c.predict(api_name="/reset")
    assert slider_values == [0.0] * len(editor.directions) and np.array_equal(pixels(back), pixels(recon))
    lat_path, img_path, status = c.predict(*zeros(editor, end), api_name="/export")
    lat = e4e.load_latents(lat_path)
    assert lat.names == [sample.stem] and lat.meta["edit"] == {editor.directions[0].label: end}
    k = -(-web.DISPLAY // editor.size)  # the page shows small models' images enlarged k times
    assert np.array_equal(pixels(img_path), pixels(moved)[::k, ::k])
    exported = list((editor.workdir / "exports").rglob("*.npz"))
    assert any(p.name == Path(lat_path).name for p in exported)


def test_bad_input_is_a_message_and_the_server_keeps_serving(server, tmp_path):
    editor, app, url = server
    c = client(url, tmp_path)
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"this is not a picture")
    *_, status = c.predict(gradio_client.handle_file(str(bad)), False, *zeros(editor), api_name="/invert_upload")
    assert status == "**Error:** holiday.png: not an image file (or an unsupported format)"
    assert c.predict("optimize", 3, *zeros(editor), api_name="/refine")[-1] == "**Error:** invert an image first"
    *_, status = c.predict(core.sample_images()[1].stem, False, *zeros(editor), api_name="/invert_sample")
    assert "distortion" in status


def test_concurrent_requests_are_queued_not_lost(server, tmp_path, monkeypatch):
    editor, app, url = server
    names = [p.stem for p in core.sample_images()[:6]]
    results, running, most = {}, [0], [0]
    real_invert = editor.invert

    def counted(*args, **kwargs):  # how many inversions run at once on the shared model
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            return real_invert(*args, **kwargs)
        finally:
            running[0] -= 1

    monkeypatch.setattr(editor, "invert", counted)

    def one(i, name):
        c = client(url, tmp_path / str(i))  # one client each: separate sessions, as separate browser tabs
        results[name] = c.predict(name, False, *zeros(editor, 1.0), api_name="/invert_sample")[-1]

    threads = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == sorted(names)
    assert all(results[n].startswith(f"**{n}**: inverted") for n in names)
    assert most[0] == 1  # queued: one at a time


def test_refine_through_the_queue(server, tmp_path):
    editor, app, url = server
    c = client(url, tmp_path)
    *_, first = c.predict(core.sample_images()[2].stem, False, *zeros(editor), api_name="/invert_sample")
    recon, edited, status = c.predict("optimize", 3, *zeros(editor), api_name="/refine")
    assert "refined (3 steps)" in status and "after optimize" in status
    before = float(first.rsplit(" ", 1)[1])
    after = float(status.split("distortion (MSE in [-1, 1]) ")[1].split()[0])
    assert after < before


def test_gradio_files_stay_in_the_workdir(server, tmp_path):
    editor, app, url = server
    assert Path(app.GRADIO_CACHE).resolve() == (editor.workdir / "gradio").resolve()
    c = client(url, tmp_path)
    up = tmp_path / "marker_upload.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(up)
    c.predict(gradio_client.handle_file(str(up)), False, *zeros(editor), api_name="/invert_upload")
    assert list((editor.workdir / "gradio").rglob("marker_upload.png"))


def test_missing_gradio_is_one_line(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(E4EError, match=r"pip install 'e4e\[web\]'"):
        web.require_gradio()
