"""Reference look-alike models (written here, never copied from upstream) used by the
demo, the examples and the tests.  Importing the package registers every look-alike under its
upstream name (``registry.MODELS``), which ``models.build_reference`` and ``registry.make`` build from."""
from .encoders import (EDSR, RCAN, RDB, RDN, CALayer, MeanShift, RCAB, RDB_Conv, ResBlock, ResidualGroup,
                       make_edsr, make_edsr_baseline)
from .liif import LIIF, MLP
from .models import REFERENCE_NAMES, build_reference, cell_for, make, make_coord, to_pixel_samples
from .srno import SRNO, simple_attn

__all__ = ["EDSR", "RCAN", "RDB", "RDN", "CALayer", "MeanShift", "RCAB", "RDB_Conv", "ResBlock",
           "ResidualGroup", "make_edsr", "make_edsr_baseline", "LIIF", "MLP", "SRNO", "simple_attn",
           "build_reference", "make", "make_coord", "to_pixel_samples", "cell_for", "REFERENCE_NAMES"]
