"""Latent editing: InterFaceGAN-style linear directions, GANSpace, SeFa, and fitting new directions."""
from e4e.editing.fit import FitResult, class_gap, fit_direction
from e4e.editing.ganspace import (PRESETS as GANSPACE_PRESETS, ganspace_coordinates, ganspace_edit, ganspace_pca,
                                  load_pca, resolve_edit, save_pca)
from e4e.editing.interfacegan import (apply_direction, check_direction, load_direction, save_direction,
                                      strength_range, sweep_direction)
from e4e.editing.sefa import SefaResult, sefa_directions

__all__ = ["FitResult", "GANSPACE_PRESETS", "SefaResult", "apply_direction", "check_direction", "class_gap",
           "fit_direction",
           "ganspace_coordinates", "ganspace_edit", "ganspace_pca", "load_direction", "load_pca", "resolve_edit",
           "save_direction", "save_pca", "sefa_directions", "strength_range", "sweep_direction"]
