"""The `e4e serve` page: core.Editor laid out with Gradio (the optional extra `e4e[web]`).

In: an Editor (model, directions, work folder). Out: a gr.Blocks app whose events call the Editor:
upload or pick a sample -> input, inversion (with its distortion) and edit side by side; one slider per
direction -> the edit, re-rendered as the slider moves; refine (optimisation / PTI, with a progress
bar); export -> the edited latents (.npz) and image (.png) to download.

Bad input never reaches the user as a traceback: every E4EError becomes the one-line status message
under the images and the page keeps working. Requests wait in Gradio's queue (one runs at a time, all events in one
concurrency group: the model is shared), and Gradio's own uploads and caches go to the Editor's work folder
(GRADIO_TEMP_DIR), so the server writes nowhere else.

Endpoints (also for gradio_client): /invert_upload, /invert_sample, /edit, /reset, /refine, /export.
"""
from __future__ import annotations

import os
from pathlib import Path

from e4e.errors import E4EError
from e4e.serve.core import REFINE_METHODS, Editor, sample_images

DISPLAY = 256  # small models' images are shown enlarged (nearest neighbour) to at least this size
QUEUE_SIZE = 64  # requests waiting beyond this are refused with Gradio's "queue full" message
MAX_UPLOAD = "25mb"


def require_gradio():
    try:
        import gradio
    except ImportError:
        raise E4EError("e4e serve needs Gradio: pip install 'e4e[web]'") from None
    return gradio


def display(im):
    """Enlarge a small image for the page (the exported files keep the model's size)."""
    from PIL import Image
    k = max(1, -(-DISPLAY // max(im.size)))
    return im if k == 1 else im.resize((im.width * k, im.height * k), Image.Resampling.NEAREST)


def status_line(inv, what: str = "inverted") -> str:
    text = f"**{inv.name}**: {what}, distortion (MSE in [-1, 1]) {inv.distortion:.4f}"
    return text + (f" after {inv.refined}" if inv.refined else "")


def error_line(err: Exception) -> str:
    return f"**Error:** {' '.join(str(err).split())}"


def build_app(editor: Editor):
    """The page for `editor`; Gradio's files go to editor.workdir / 'gradio'."""
    cache = editor.workdir / "gradio"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(cache)  # read when components and the server are created
    gr = require_gradio()
    samples = {p.stem: p for p in sample_images()}
    n = len(editor.directions)
    skip = gr.update()

    def show(inv, values, what="inverted"):
        return (inv, display(inv.image), display(editor.reconstruction(inv)),
                display(editor.edit(inv, values)), status_line(inv, what))

    def invert(path, align, values, name=None):
        try:
            return show(editor.invert(path, bool(align), name), values)
        except E4EError as e:
            return skip, skip, skip, skip, error_line(e)

    def invert_upload(path, align, *values):
        return invert(path, align, values)

    def invert_sample(name, align, *values):  # Gradio's dropdown refuses names not in the list
        return invert(samples[name], align, values, name)

    def edit(inv, *values):
        if inv is None:
            return skip
        return display(editor.edit(inv, values))

    def reset(inv):
        image = skip if inv is None else display(editor.reconstruction(inv))
        return [0.0] * n + [image]

    def refine(inv, method, steps, *values, progress=gr.Progress(track_tqdm=True)):
        if inv is None:
            return skip, skip, skip, error_line(E4EError("invert an image first"))
        try:
            inv = editor.refine(inv, method, int(steps), progress=True)
        except E4EError as e:
            return skip, skip, skip, error_line(e)
        return inv, display(editor.reconstruction(inv)), display(editor.edit(inv, values)), \
            status_line(inv, f"refined ({int(steps)} steps)")

    def export(inv, *values):
        if inv is None:
            return skip, skip, error_line(E4EError("invert an image first"))
        latents, image = editor.export(inv, values)
        return str(latents), str(image), f"**{inv.name}**: exported {latents.name} and {image.name}"

    align_label = "align face (FFHQ crop)" if editor.detector is not None else \
        "align face (unavailable: facenet-pytorch's MTCNN weights not found)"
    with gr.Blocks(title="e4e: invert and edit", analytics_enabled=False) as app:
        state = gr.State(None)
        gr.Markdown("## e4e: invert an image into StyleGAN's W+, then edit it\n"
                    f"Model: `{Path(getattr(editor.inverter, 'checkpoint_path', 'in memory')).name}`, "
                    f"{editor.size} px, {len(editor.directions)} directions.")
        with gr.Row():
            with gr.Column(scale=1, min_width=220):
                upload = gr.File(label="upload an image", type="filepath", elem_id="upload")
                sample = gr.Dropdown(list(samples), value=None, label="or pick a sample", elem_id="sample")
                align = gr.Checkbox(value=editor.align_default and editor.detector is not None, label=align_label,
                                    interactive=editor.detector is not None, elem_id="align")
            shown = dict(type="pil", format="png", interactive=False, height=DISPLAY, buttons=["download"])
            input_img = gr.Image(label="input", elem_id="input", **shown)
            recon_img = gr.Image(label="e4e inversion", elem_id="inversion", **shown)
            edited_img = gr.Image(label="edited", elem_id="edited", **shown)
        status = gr.Markdown("Upload an image or pick a sample.", elem_id="status")
        sliders = []
        with gr.Row():
            for i, d in enumerate(editor.directions):
                sliders.append(gr.Slider(-d.limit, d.limit, value=0.0, step=0.1, label=d.label,
                                         elem_id=f"direction-{i}", min_width=200))
        reset_btn = gr.Button("reset sliders", size="sm")
        with gr.Accordion("refine (lower distortion, slower)", open=False):
            with gr.Row():
                method = gr.Radio(list(REFINE_METHODS), value="optimize", label="method",
                                  info="optimize: Adam on the codes; pti: tune a copy of the generator")
                steps = gr.Slider(1, 500, value=100, step=1, label="steps")
                refine_btn = gr.Button("refine", elem_id="refine")
        with gr.Row():
            export_btn = gr.Button("export latents and image", elem_id="export")
            latents_file = gr.File(label="latents (.npz)", interactive=False)
            image_file = gr.File(label="edited image (.png)", interactive=False)

        shown_outputs = [state, input_img, recon_img, edited_img, status]
        one = dict(concurrency_id="model")  # every event uses the one model: they share one queue slot
        upload.upload(invert_upload, [upload, align, *sliders], shown_outputs, api_name="invert_upload", **one)
        sample.input(invert_sample, [sample, align, *sliders], shown_outputs, api_name="invert_sample", **one)
        for i, s in enumerate(sliders):  # every slider runs the same edit; clients see it once, as /edit
            s.input(edit, [state, *sliders], edited_img, trigger_mode="always_last", **one,
                    **(dict(api_name="edit") if i == 0 else dict(api_visibility="private")))
        reset_btn.click(reset, state, [*sliders, edited_img], api_name="reset", **one)
        refine_btn.click(refine, [state, method, steps, *sliders], [state, recon_img, edited_img, status],
                         api_name="refine", **one)
        export_btn.click(export, [state, *sliders], [latents_file, image_file, status], api_name="export", **one)
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app


def launch(editor: Editor, host: str = "127.0.0.1", port: int = 7860, block: bool = True, app=None):
    """Serve the page; block=False returns (app, url) with the server running in a thread. `app` is one
    build_app(editor) already made (so a caller holds it, to close it, before the server starts)."""
    app = build_app(editor) if app is None else app
    app.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, ssr_mode=False, share=False,
               show_error=False, prevent_thread_lock=not block, inbrowser=False, quiet=not block,
               allowed_paths=[str(editor.workdir)])
    return app, app.local_url
