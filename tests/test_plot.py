"""e4e.plot: the Pillow-only charts (nice_ticks is tested with the evaluation that uses it)."""
import numpy as np
from PIL import Image, ImageDraw

from e4e.plot import _rotated_label, font


def test_rotated_axis_label_keeps_every_glyph_whole():
    """The text box of a scalable font starts below the origin (its ascent): a label drawn at the origin of
    an image of the box's size lost its last pixel rows (the figures' y labels were cut along one side).
    The turned label has a clear margin on all four sides and holds the text's full height and width."""
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    for text, size in (("success rate", 18), ("Edit perceptual distance (gypsy)", 24)):
        f = font(size)
        label = _rotated_label(draw, text, f)
        ink = np.asarray(label)[..., 3] > 0
        assert not (ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any()), text
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=f)
        rows, cols = np.nonzero(ink)
        # turned 90 degrees: the text's width runs down the rows, its height across the columns (the ink is a
        # little inside the box: side bearings)
        assert rows.max() - rows.min() + 1 >= 0.9 * (x1 - x0) and cols.max() - cols.min() + 1 >= 0.9 * (y1 - y0), text
