"""Reference look-alike models (written here, never copied from upstream) used by the
demo, the examples and the tests."""
from .encoders import (EDSR, RCAN, RDB, RDN, CALayer, MeanShift, RCAB, RDB_Conv, ResBlock, ResidualGroup,
                       make_edsr, make_edsr_baseline)

__all__ = ["EDSR", "RCAN", "RDB", "RDN", "CALayer", "MeanShift", "RCAB", "RDB_Conv", "ResBlock",
           "ResidualGroup", "make_edsr", "make_edsr_baseline"]
