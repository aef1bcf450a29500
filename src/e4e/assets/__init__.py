"""Files shipped inside the package: the small embedded inverter used when no --checkpoint is given."""
from pathlib import Path

from e4e.errors import E4EError

DEFAULT_INVERTER = "e4e_avatar128.safetensors"


def default_inverter_path() -> Path:
    """Path of the embedded inverter, or E4EError when this install has none."""
    path = Path(__file__).resolve().parent / DEFAULT_INVERTER
    if not path.is_file():
        raise E4EError("no embedded model in this install: pass --checkpoint PATH")
    return path
