"""Files shipped inside the package, used when no --checkpoint (or other path) is given.

- DEFAULT_INVERTER: the embedded e4e model (encoder + StyleGAN2 generator, 128 px avatars).
- DIRECTIONS: label directions fitted to that model (e4e.benchmark's directions file: smile, glasses,
  facial hair, hat, hair colour, calibrated strengths; plus its top SeFa direction), read by `e4e demo`
  and offered as sliders by `e4e serve`.
- SAMPLES: held-out test avatars with their counterfactual pairs (the true result of each edit), in the
  avatar dataset's own layout (labels.csv, pairs.csv, pairs/<attribute>/).
`scripts/make_demo_assets.py DATA` regenerates DIRECTIONS and SAMPLES for a new model.

The earlier 64 px emoji model is no longer shipped (the package's weights must stay under 40 MB); it
is in the git history and loads by path like any native file: see EMOJI64_HOWTO.
"""
from pathlib import Path

from e4e.errors import E4EError

DEFAULT_INVERTER = "e4e_avatar128.safetensors"
DIRECTIONS = "directions.safetensors"
SAMPLES = "samples"
EMOJI64_HOWTO = ("git show 4ba1ebf:src/e4e/assets/e4e_emoji64.safetensors > e4e_emoji64.safetensors, "
                 "then --checkpoint e4e_emoji64.safetensors")

HERE = Path(__file__).resolve().parent


def default_inverter_path() -> Path:
    """Path of the embedded inverter, or E4EError when this install has none."""
    path = HERE / DEFAULT_INVERTER
    if not path.is_file():
        raise E4EError("no embedded model in this install: pass --checkpoint PATH")
    return path


def directions_path() -> Path:
    """The shipped directions file (it may be absent in a trimmed install: callers check)."""
    return HERE / DIRECTIONS


def samples_dir() -> Path:
    """The shipped held-out avatars and their pairs."""
    return HERE / SAMPLES
