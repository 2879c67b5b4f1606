"""AnySRConfig: every AnySR hyper-parameter in one validated, serialisable place.

Why one object: the widths, the scale-group bounds, lambda, the reset probability
and the gate kind must agree between conversion, training, evaluation, export and
the checkpoints an upstream trainer writes.  The config travels as a plain dict
(YAML inside upstream model specs), so it validates on every construction and
rejects unknown keys instead of silently ignoring a typo.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, WidthError, shorten
from .files import write_text
from .limits import INT64_MAX, to_float
from .registry import BLOCK_TYPES
from .safe_yaml import MAX_BYTES, load_yaml

GATE_KINDS = ("identity", "paper")
INTERWEAVE_KINDS = ("interleave", "concat", "none")
RDB_GATE_PLACES = ("first", "last")
COMPAT_MODES = (None, "official")
DECODER_KINDS = ("off", "slim")
RESET_MODES = ("sample", "batch")
MIXED_PATHS = ("auto", "grouped", "masked")

CONFIG_VERSION = 1

#: ``scale_from`` naming a function: ``package.module:function`` (dotted attribute path allowed)
SCALE_FROM_NAME = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")

#: torch.Generator.manual_seed takes a signed or an unsigned 64-bit integer
SEED_MIN, SEED_MAX = -2**63, 2**64 - 1
#: a width given as float32 (numpy scalar, tensor) matches the configured float64 width to this
WIDTH_TOLERANCE = 1e-6


def _is_bool(value: Any) -> bool:
    """Python and numpy booleans (numbers.Integral counts True as 1; a config never should)."""
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool") and hasattr(value, "dtype")


def _fail(name: str, value: Any, why: str) -> None:
    raise ConfigError(f"AnySRConfig.{name}={shorten(value)}: {why}")


@dataclass
class AnySRConfig:
    """Validated AnySR settings (paper Sec. III).

    widths        ascending widths of the sub-networks F_1..F_T; the last is 1.0.
    scale_bounds  upper scale bound of each group but the last, on max(s_h, s_w):
                  s <= 1.75 -> widths[0], <= 2.55 -> widths[1], ...; above -> widths[-1].
                  Continuous, so 1.75 or 2.05 get their group's width, not the full one.
    lam           lambda of feature interweaving (scale pair inserted after every C/lambda
                  features); None = each block type's ``default_lam`` (paper: 4 EDSR/RCAB,
                  8 RDB; 4 RRDB).
    reset_prob    Algorithm 1 line 4: probability a training sample runs the full network.
    reset         "sample": one reset draw per sample (upstream LIIF/LTE/SRNO pipelines draw a
                  scale per sample, so each sample is its own Algorithm-1 draw; batches mix widths
                  and run the mixed path).  "batch": one draw per iteration, as Algorithm 1 is
                  written; with one scale group per batch (Meta-SR / ArbSR trainers, or
                  ``anysr finetune`` with this setting) every batch then runs ONE sub-network on
                  the sliced path (cheapest step), at the price of noisier per-step updates.
    mixed_path    how a batch whose samples need different widths runs: "grouped" (each width
                  group's sliced convolutions on its sub-batch: fewer MACs, less memory),
                  "masked" (full-size convolutions with per-sample channel masks: static shapes),
                  "auto" (grouped in training and on maps >= 32x32 pixels; masked on smaller maps
                  without gradients and under torch.compile, where masked keeps shapes static).
                  Both are exact (equal to running every sample alone); see blocks/base.py.
    gate          "identity": 2*sigmoid with fc2 zero-initialised, so conversion preserves the
                  function exactly; "paper": sigmoid with default init.
    interweave    "interleave" (paper), "concat" (ablation "w/o FI"), "none" (ablation "w/o ASE").
    rdb_gate      which dense layer of an RDB carries the gate (see blocks/rdn.py).
    seed          seed of the generator that draws Algorithm 1's resets; None = from torch's RNG.
    fallback_scale  scale fed to the gates when no scale is known (a warning is emitted).
    compat        None (paper-faithful) or "official": reproduce the official release's quirks.
    decoder       "off" (paper: only the encoder is slimmed) or "slim": beyond the paper, the
                  implicit decoder's hidden width (LIIF/LTE ``imnet``, SRNO ``fc1``/``fc2``) is
                  chosen by the same scale groups (decoder.py).
    decoder_widths  decoder hidden width per scale group (same length as ``widths``, ascending,
                  last 1.0); None = ``widths``.  Only read when ``decoder="slim"``.
    scale_from    where a call's scale comes from when the model's structure does not say (or
                  says wrong): None (structure decides), "context" (use_scale / use_width only) or
                  "module:function" (an importable fn(module, args, kwargs) -> (B, 2) scale or
                  None).  A name, so it travels in YAML and checkpoints; anysrify(scale_from=)
                  wins over it.
    """

    widths: tuple = (0.5, 0.7, 0.9, 1.0)
    scale_bounds: tuple = (1.75, 2.55, 3.25)
    lam: int | None = None
    reset_prob: float = 0.6
    gate: str = "identity"
    interweave: str = "interleave"
    rdb_gate: str = "first"
    seed: int | None = None
    fallback_scale: float = 4.0
    compat: str | None = None
    decoder: str = "off"
    decoder_widths: tuple | None = None
    reset: str = "sample"
    mixed_path: str = "auto"
    scale_from: str | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        self.widths = self._float_tuple("widths", self.widths)
        self.scale_bounds = self._float_tuple("scale_bounds", self.scale_bounds)
        w = self.widths
        if not w:
            _fail("widths", w, "needs at least one width")
        if any(not (0.0 < x <= 1.0) for x in w):
            _fail("widths", w, "every width must lie in (0, 1]")
        if any(b <= a for a, b in zip(w, w[1:])):
            _fail("widths", w, "widths must be strictly ascending")
        if w[-1] != 1.0:
            _fail("widths", w, "the last width must be 1.0 (the full network)")
        b = self.scale_bounds
        if len(b) != len(w) - 1:
            _fail("scale_bounds", b, f"needs exactly len(widths) - 1 = {len(w) - 1} bounds")
        if any(not math.isfinite(x) or x <= 0 for x in b):
            _fail("scale_bounds", b, "bounds must be positive finite numbers")
        if any(y <= x for x, y in zip(b, b[1:])):
            _fail("scale_bounds", b, "bounds must be strictly ascending")
        if self.lam is not None:
            if _is_bool(self.lam) or not isinstance(self.lam, numbers.Integral) or not 1 <= self.lam <= INT64_MAX:
                _fail("lam", self.lam, "must be a positive integer or None (paper default per block)")
            self.lam = int(self.lam)
        if _is_bool(self.reset_prob) or not isinstance(self.reset_prob, numbers.Real):
            _fail("reset_prob", self.reset_prob, "must be a number in [0, 1]")
        self.reset_prob = to_float(self.reset_prob, ConfigError, "AnySRConfig.reset_prob")
        if not 0.0 <= self.reset_prob <= 1.0:
            _fail("reset_prob", self.reset_prob, "must lie in [0, 1]")
        self._choice("reset", RESET_MODES)
        self._choice("mixed_path", MIXED_PATHS)
        self._choice("gate", GATE_KINDS)
        self._choice("interweave", INTERWEAVE_KINDS)
        self._choice("rdb_gate", RDB_GATE_PLACES)
        self._choice("compat", COMPAT_MODES)
        self._choice("decoder", DECODER_KINDS)
        if self.scale_from is not None and not (isinstance(self.scale_from, str) and (
                self.scale_from == "context" or SCALE_FROM_NAME.fullmatch(self.scale_from))):
            _fail("scale_from", self.scale_from, "must be None (the model's structure decides), 'context' or "
                  "'module:function' naming an importable fn(module, args, kwargs) -> (B, 2) scale or None "
                  "(a callable itself goes to anysrify(model, cfg, scale_from=fn), not into the config)")
        if self.decoder_widths is not None:
            dw = self.decoder_widths = self._float_tuple("decoder_widths", self.decoder_widths)
            if len(dw) != len(w):
                _fail("decoder_widths", dw, f"needs one width per scale group ({len(w)}, like widths)")
            if any(not (0.0 < x <= 1.0) for x in dw) or any(b <= a for a, b in zip(dw, dw[1:])) or dw[-1] != 1.0:
                _fail("decoder_widths", dw, "widths must lie in (0, 1], ascend strictly and end with 1.0")
        if self.decoder == "slim" and self.compat == "official":
            _fail("decoder", self.decoder, "the official release has no slimmable decoder; use decoder='off' "
                  "with compat='official'")
        if self.seed is not None:
            if _is_bool(self.seed) or not isinstance(self.seed, numbers.Integral):
                _fail("seed", self.seed, "must be an integer or None")
            self.seed = int(self.seed)
            if not SEED_MIN <= self.seed <= SEED_MAX:  # what torch.Generator.manual_seed accepts
                _fail("seed", self.seed, f"must lie in [{SEED_MIN}, {SEED_MAX}] (torch's seed range)")
        if _is_bool(self.fallback_scale) or not isinstance(self.fallback_scale, numbers.Real) \
                or not math.isfinite(to_float(self.fallback_scale, ConfigError, "AnySRConfig.fallback_scale")) \
                or self.fallback_scale <= 0:
            _fail("fallback_scale", self.fallback_scale, "must be a positive finite number")
        self.fallback_scale = float(self.fallback_scale)
        if self.version != CONFIG_VERSION:
            _fail("version", self.version, f"this anysr_plugin reads config version {CONFIG_VERSION}")

    # -- validation helpers -------------------------------------------------
    @staticmethod
    def _float_tuple(name: str, value: Any) -> tuple:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            _fail(name, value, "must be a list of numbers")
        out = []
        for x in value:
            if _is_bool(x) or not isinstance(x, numbers.Real):
                _fail(name, value, f"entry {shorten(x)} is not a number")
            out.append(to_float(x, ConfigError, f"AnySRConfig.{name} entry"))
        return tuple(out)

    def _choice(self, name: str, allowed: tuple) -> None:
        value = getattr(self, name)
        if value not in allowed:
            _fail(name, value, f"must be one of {', '.join(repr(a) for a in allowed)}")

    # -- policy -------------------------------------------------------------
    def lam_for(self, block_type) -> int:
        """Lambda for a block type: ``lam`` when set, else the type's ``default_lam``.

        ``block_type``: a block class (or block), or a registered type name ('edsr', 'rcab',
        'rdb', 'rrdb', or a user type's), looked up in the block-type table (``registry.BLOCK_TYPES``).
        """
        if self.lam is not None:
            return self.lam
        if isinstance(block_type, str):
            block_type = BLOCK_TYPES.get(block_type)
        return block_type.default_lam

    def width_for_scale(self, scale: float) -> float:
        """Width of the scale group that `scale` (= max(s_h, s_w)) falls in."""
        for bound, width in zip(self.scale_bounds, self.widths):
            if scale <= bound:
                return width
        return self.widths[-1]

    def decoder_width_for(self, width: float) -> float:
        """Decoder hidden width that goes with encoder `width` (same scale group)."""
        if self.decoder_widths is None:
            return self.check_width(width)
        return self.decoder_widths[self.widths.index(self.check_width(width))]

    def check_width(self, width: Any) -> float:
        """The configured width equal to `width` (a number, numpy scalar or one-element tensor,
        equal within float32 precision); WidthError for anything else, booleans included."""
        value = width
        if hasattr(value, "numel") and hasattr(value, "item"):  # a torch tensor
            if value.numel() != 1 or value.dtype == _torch_bool():
                raise WidthError(f"width must be one number, got a tensor of shape {tuple(value.shape)} "
                                 f"({value.dtype}); pass one of {shorten(self.widths)}")
            value = value.item()
        elif hasattr(value, "dtype") and hasattr(value, "item") and getattr(value, "shape", None) == ():
            value = value.item()  # numpy scalars (np.float32(0.7) -> 0.699999988...)
        if _is_bool(value) or not isinstance(value, numbers.Real):
            raise WidthError(f"width must be a number, one of {shorten(self.widths)}; got {type(width).__name__} "
                             f"{shorten(width)}")
        value = to_float(value, WidthError, "width")
        if math.isfinite(value):
            best = min(self.widths, key=lambda w: abs(value - w))
            if abs(value - best) <= WIDTH_TOLERANCE:
                return best
        raise WidthError(f"width {shorten(width)} is not one of the configured widths {shorten(self.widths)}; use one "
                         "of them (the widths are set in the AnySR config)")

    # -- serialisation ------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        d["scale_bounds"] = list(self.scale_bounds)
        if self.decoder_widths is not None:
            d["decoder_widths"] = list(self.decoder_widths)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "AnySRConfig":
        if data is None:
            return cls()
        if isinstance(data, AnySRConfig):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"AnySR config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown AnySR config key(s) {shorten(unknown)}; known keys: {sorted(known)}")
        return cls(**dict(data))

    def to_yaml(self, path: str | Path | None = None) -> str:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            write_text(path, text)
        return text

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> "AnySRConfig":
        import yaml

        text, from_file = _read_if_file(text_or_path)
        try:
            data = load_yaml(text, f"AnySR config file {str(text_or_path)!r}" if from_file else "AnySR config text")
        except yaml.YAMLError as exc:
            raise ConfigError(f"AnySR config is not valid YAML: {' '.join(str(exc).split())}") from None
        if isinstance(data, str) and not from_file and "\n" not in text.strip():  # a bare word: a missing file
            raise ConfigError(f"AnySR config file {shorten(text.strip())} does not exist (pass a YAML file or YAML text)")
        if from_file and data is None:  # a truncated or emptied file must not mean "the paper's defaults"
            raise ConfigError(f"AnySR config file {str(text_or_path)!r} is empty; write its fields (or drop the "
                              "option for the paper's defaults)")
        if from_file and not isinstance(data, Mapping):
            raise ConfigError(f"AnySR config file {str(text_or_path)!r} holds a {type(data).__name__}, not a mapping "
                              "of AnySRConfig fields (e.g. `widths: [0.5, 1.0]`)")
        if isinstance(data, Mapping) and "anysr" in data and isinstance(data["anysr"], Mapping):
            data = data["anysr"]
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "AnySRConfig":
        return dataclasses.replace(self, **changes)


def _read_if_file(text_or_path: "str | Path") -> tuple:
    """(the file's text, True) when `text_or_path` names a file, else (the string itself, False)."""
    path = None
    if isinstance(text_or_path, Path):
        path = text_or_path
    elif not isinstance(text_or_path, str):
        raise ConfigError(f"AnySR config must be a YAML file path or YAML text, got {type(text_or_path).__name__}")
    else:
        try:
            if "\n" not in text_or_path and Path(text_or_path).exists():
                path = Path(text_or_path)
        except OSError:  # e.g. a "name" longer than the file system allows: it is YAML text
            pass
    if path is None:
        return str(text_or_path), False
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_BYTES + 1)  # the size limit is judged by load_yaml; never read an endless device
        return text, True
    except FileNotFoundError:
        raise ConfigError(f"AnySR config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:  # a folder, no permission, a binary file
        raise ConfigError(f"cannot read AnySR config file {str(path)!r}: {type(exc).__name__}: {exc}") from None


def _torch_bool():
    import torch

    return torch.bool


def channels_at(channels: int, width: float) -> int:
    """floor(C * w), robust to float error (0.7 * 64 = 44.8 -> 44; 0.9 * 70 = 63.0 -> 63)."""
    return max(1, int(math.floor(channels * width + 1e-6)))
