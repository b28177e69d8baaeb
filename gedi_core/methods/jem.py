"""JEM-style energy model: the generative term alone (10 SGLD steps in the toy runs)."""

from gedi_core.methods.base import register
from gedi_core.methods.gedi import GEDI

register(
    "jem",
    GEDI,
    {"weights": {"gen": 1.0, "inv": 0.0, "prior": 0.0}, "sgld": {"steps": 10}},
    {"inv", "prior"},
    "JEM: contrastive divergence only",
)
