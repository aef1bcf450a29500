"""e4e: encode real images into editable StyleGAN latents (Tov et al., SIGGRAPH 2021).

    inv = e4e.load("e4e_ffhq_encode.pt")      # or e4e.load() for the embedded model
    lat = e4e.invert("photos/", inv)           # Latents: names, W+ codes, checkpoint identity
    e4e.save_latents("latents.npz", lat)
    edited = e4e.edit(lat, direction="age.pt", strength=3)
"""

from e4e.errors import E4EError

__version__ = "0.1.0"

# The API pulls in torch; `import e4e` stays light and loads it on first use.
_API = ("Latents", "load", "invert", "edit", "save_latents", "load_latents")
__all__ = ["E4EError", "__version__", *_API]


def __getattr__(name):
    if name in _API:
        from e4e import api
        return getattr(api, name)
    raise AttributeError(f"module 'e4e' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
