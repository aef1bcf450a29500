"""e4e serve: the local web app (invert, edit with sliders, refine, export) on 127.0.0.1:7860.

Thin over e4e.serve: loads the Editor (model + discovered directions) into a fresh temporary folder,
which is the only place the server writes to and which is removed when it stops.
"""
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path


def run(args) -> int:
    from e4e.errors import E4EError
    if not 0 < args.port < 65536:
        raise E4EError(f"--port must be in 1..65535, got {args.port}")
    # Ctrl-C and SIGTERM stop the server the same way, even where the parent left SIGINT ignored (a
    # background job of a non-interactive shell inherits SIG_IGN, and then the folder would stay behind)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="e4e-serve-"))
    # Gradio fixes some of its folders when imported: point them into ours first
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from e4e.serve.app import build_app, launch, require_gradio
        from e4e.serve.core import load_editor
        require_gradio()
        editor = load_editor(workdir, args.checkpoint, args.directions or (), n_sefa=args.sefa,
                             n_ganspace=args.ganspace, device=args.device)
        if args.align is not None:
            editor.align_default = args.align
        print(f"e4e serve: {len(editor.directions)} directions: {', '.join(d.label for d in editor.directions)}")
        print(f"e4e serve: files go to {workdir} (removed on exit); Ctrl-C stops the server")
        app = build_app(editor)
        try:  # Ctrl-C may come while launch() is still finishing after the page already answers
            launch(editor, args.host, args.port, block=False, app=app)
            print(f"* Running on local URL:  {app.local_url}", flush=True)
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("e4e serve: stopping", flush=True)
        # no request handler may write into workdir after this; a close stuck behind a long request must
        # not keep the folder from being removed
        closer = threading.Thread(target=app.close, daemon=True)
        closer.start()
        closer.join(timeout=10)
    finally:
        _remove(workdir)
        print(f"e4e serve: removed {workdir}", flush=True)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _remove(folder: Path, tries: int = 20) -> None:
    """rmtree that outlasts a worker thread still finishing a file (one pass can leave a folder behind)."""
    for _ in range(tries):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.25)


def register(sub):
    from e4e.cli import add_threads
    p = sub.add_parser("serve", help="local web app: invert an image, edit it with sliders, export (needs e4e[web])")
    p.add_argument("--checkpoint", help="inverter to serve (default: the embedded model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--directions", nargs="*", metavar="PATH",
                   help="InterFaceGAN direction files (.pt/.npy) or folders of them, one slider each")
    p.add_argument("--sefa", type=int, default=3, help="sliders for the top SeFa directions (default 3)")
    p.add_argument("--ganspace", type=int, default=3, help="sliders for the top GANSpace components (default 3)")
    p.add_argument("--align", action="store_true", default=None,
                   help="FFHQ-align uploads by default (default: on for face models when MTCNN weights exist)")
    p.add_argument("--no-align", dest="align", action="store_false")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    add_threads(p)
    p.set_defaults(func=run)
