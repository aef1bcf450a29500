"""e4e: encode real images into editable StyleGAN latents (Tov et al., SIGGRAPH 2021)."""

from e4e.errors import E4EError

__version__ = "0.1.0"
__all__ = ["E4EError", "__version__"]
