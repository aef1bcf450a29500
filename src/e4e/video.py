"""Videos as frame sequences: grouping inverted frames, smoothing their codes over time, writing clips.

In:  latents whose names are frames: `e4e invert clip.gif --frames all` names them clip/000000,
     clip/000001...; a folder of frame images inverted as `e4e invert frames/` gives 000000, ... (one
     sequence, called "frames"). Frames of one sequence share a parent name and sort by name.
Out: per sequence the frame indices in order (`sequences`), codes smoothed with a centred moving
     average (`smooth_codes`: W+ codes of neighbouring frames jitter a little even when the video does
     not, and the jitter shows as flicker), and a clip from PIL frames (`write_clip`).

Clips: an animated GIF through Pillow always; an MP4 only where an `ffmpeg` executable is on PATH
(it is not a Python dependency; without it .mp4 is a one-line error asking for .gif).
"""
import shutil
import subprocess
from pathlib import Path

import torch

from e4e.errors import E4EError

CLIP_FORMATS = ("gif", "mp4")


def sequences(names: list[str]) -> dict[str, list[int]]:
    """Names -> {sequence name: indices into names in frame order}; a sequence is the names sharing a
    parent ("frames" for names without one)."""
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        parent = Path(n).parent.as_posix()
        groups.setdefault("frames" if parent in ("", ".") else parent, []).append(i)
    return {k: sorted(v, key=lambda i: names[i]) for k, v in groups.items()}


def smooth_codes(codes: torch.Tensor, window: int) -> torch.Tensor:
    """(T, n_styles, D) codes of consecutive frames -> each frame the mean of the `window` frames
    centred on it (fewer at the ends, never padded). window 1 returns the codes unchanged."""
    if window < 1:
        raise E4EError(f"--smooth must be at least 1 frame, got {window}")
    if window == 1 or codes.shape[0] < 2:
        return codes.clone()
    half = window // 2
    out = torch.empty_like(codes)
    for t in range(codes.shape[0]):
        lo, hi = max(0, t - half), min(codes.shape[0], t + (window - half))
        out[t] = codes[lo:hi].mean(0)
    return out


def mp4_available() -> bool:
    return shutil.which("ffmpeg") is not None


def write_clip(frames, path, fps: float = 12.0) -> Path:
    """PIL frames -> an animated GIF (Pillow) or an MP4 (ffmpeg on PATH), by path's extension."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in CLIP_FORMATS:
        raise E4EError(f"{path}: clips are .gif or .mp4")
    if not frames:
        raise E4EError(f"{path}: no frames to write")
    if fps <= 0:
        raise E4EError(f"--fps must be positive, got {fps}")
    from e4e.outputs import atomic_write

    def write(tmp):
        if fmt == "gif":
            rgb = [f.convert("RGB") for f in frames]
            rgb[0].save(tmp, format="GIF", save_all=True, append_images=rgb[1:], duration=round(1000 / fps), loop=0)
            return
        if not mp4_available():
            raise E4EError(f"{path}: writing MP4 needs an ffmpeg executable on PATH; use --video gif")
        w, h = frames[0].size
        cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(fps), "-i", "-", "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
               "-f", "mp4", str(tmp)]
        proc = subprocess.run(cmd, input=b"".join(f.convert("RGB").tobytes() for f in frames), capture_output=True)
        if proc.returncode:
            raise E4EError(f"{path}: ffmpeg failed ({proc.stderr.decode(errors='replace').strip()[:200]})")
    atomic_write(path, write, mode="path")
    return path


def write_clips(names: list[str], frame_path, out_dir, fmt: str = "gif", fps: float = 12.0,
                progress: bool = True) -> list[Path]:
    """One clip per sequence of 2 or more frames among `names`, from the image files frame_path(name)
    -> out_dir/<sequence>.<fmt>, with a progress bar. Returns the clips written."""
    from PIL import Image
    from tqdm import tqdm
    seqs = {k: v for k, v in sequences(names).items() if len(v) > 1}
    clips = []
    for seq, idx in tqdm(seqs.items(), desc="clips", unit="clip", disable=not progress):
        frames = []
        for i in idx:
            with Image.open(frame_path(names[i])) as im:
                frames.append(im.convert("RGB"))
        clips.append(write_clip(frames, Path(out_dir) / f"{seq}.{fmt}", fps))
    return clips
