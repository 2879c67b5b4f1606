"""Beyond the paper (opt-in, ``AnySRConfig(decoder="slim")``): a scale-aware slimmable decoder.

AnySR slims only the encoder, but in LIIF/LTE/SRNO the implicit decoder runs once per
HR query (four times with LIIF's local ensemble), so at x2 it is most of the model's
MACs.  The paper's insight -- small scales need less capacity -- is applied to the
decoder's hidden width: the scale group that picks the encoder width ``widths[t]``
also picks the decoder width ``decoder_widths[t]`` (default: the same widths), and
Algorithm 1 trains both with the *same* per-sample draw (the plan the encoder blocks
get for the call, read by :func:`current_widths`).

Converted in place like the blocks (plan, validate, apply; nothing changes on failure):

* LIIF / LTE ``imnet`` (``layers = [Linear, act, ..., Linear]``) -> :class:`SlimMLP`,
  which adopts ``layers`` (same ``Parameter`` objects, same keys ``imnet.layers.0.weight``);
  every hidden layer keeps its first ``floor(H * w)`` units.
* SRNO's pointwise decoder ``fc2(gelu(fc1(x)))`` -> :class:`SlimPointwise` twice: ``fc1``
  keeps its first ``floor(H * w)`` hidden filters (H = 256 upstream), ``fc2`` reads only those (keys
  ``fc1.weight`` ... unchanged).  SRNO's ``conv00`` and attention blocks stay full: their
  width is the residual stream of the Galerkin blocks, not a hidden layer.

No new tensor is created (so checkpoints keep their keys).  One width for the batch ->
sliced matmuls (the MACs really shrink); several -> full-size matmuls with each sample's
unused hidden units zeroed, which equals slicing each sample alone.  At full width the
original layers run on the original code path, so the output is bit-identical.

No gate: the AnySR gate pools a feature map over space to tell a scale-agnostic encoder
the scale.  The decoder is already told the scale (LIIF/LTE's ``rel_cell``, SRNO's cell
channels) at every query, and pooling over the queries would make a query's colour depend
on which other queries share its chunk (``batched_predict`` chunks them), so a gate would
add cost without adding information.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks.base import ACTIVATIONS
from .config import AnySRConfig, channels_at
from .control import anysr_blocks, unwrap
from .errors import ScaleError, UnsupportedBlockError
from .errors import NotAnySRError
from .plan import call_plan

#: a converted decoder must reproduce the original to this precision at conversion time
EQUIVALENCE_TOLERANCE = 1e-5


def current_widths(module: nn.Module, batch: int) -> list:
    """Per-sample *decoder* widths of the running call (a list of 1 or ``batch`` widths).

    The only place that reads the encoder's per-call plan: the widths the plan gave the
    encoder blocks, mapped to the decoder widths of the same scale groups.  Outside a
    hooked call (LIIF's ``gen_feat`` then ``query_rgb``) it plans like a block called
    directly: fixed width / budget / ``use_scale`` override, never a training draw; in a
    checkpoint recompute, the plan of its own forward (plan.call_plan).
    """
    block = module._anysr_source
    widths = getattr(block, "fixed_widths", None)
    if widths is None:
        widths = call_plan(module, batch, block)[1]
    if len(widths) not in (1, batch):
        raise ScaleError(f"{len(widths)} per-sample widths for a decoder batch of {batch} in "
                         f"{type(module).__name__}")
    cfg = module._anysr_state.config
    return [cfg.decoder_width_for(w) for w in widths]


def _units_mask(ns: list, units: int, like: torch.Tensor, channels_first: bool) -> torch.Tensor:
    """Mask keeping sample b's first n_b units: (B, U, 1, ...) channels first, else (B, 1, ..., U)."""
    n = torch.tensor(ns, device=like.device)
    keep = (torch.arange(units, device=like.device)[None, :] < n[:, None]).to(like.dtype)
    rest = [1] * (like.dim() - 2)
    return keep.reshape(len(ns), units, *rest) if channels_first else keep.reshape(len(ns), *rest, units)


def _set_source(decoder: nn.Module, source) -> None:
    """Plain attribute (not a registered child): the block whose plan the decoder reads."""
    decoder.__dict__["_anysr_source"] = source


class _SlimDecoder(nn.Module):
    """What both decoder kinds share: the state, the plan source and the width list."""

    def _init_common(self, upstream: nn.Module, config: AnySRConfig, state) -> None:
        self.__dict__["_anysr_upstream"] = upstream  # the upstream module itself, for unanysrify
        self.upstream_type = type(upstream).__name__
        self.widths = config.decoder_widths or config.widths
        self.training = upstream.training
        self._anysr_state = state
        _set_source(self, None)  # first AnySR block of the model (set by apply / DecoderSourceHook)


class SlimMLP(_SlimDecoder):
    """LIIF/LTE ``imnet`` whose hidden layers run at ``floor(H * w)`` units."""

    def __init__(self, mlp: nn.Module, config: AnySRConfig, state=None):
        super().__init__()
        self.layers = mlp.layers
        self._init_common(mlp, config, state)
        self.linears = [i for i, m in enumerate(self.layers) if isinstance(m, nn.Linear)]

    @staticmethod
    def structure_problem(mlp: nn.Module):
        layers = getattr(mlp, "layers", None)
        if not isinstance(layers, nn.Sequential):
            return f"{type(mlp).__name__} has no `layers` nn.Sequential"
        kinds = [type(m).__name__ for m in layers]
        if len(layers) < 3 or len(layers) % 2 == 0:
            return f"layers are [{', '.join(kinds)}]; expected Linear, act, ..., Linear with >= 1 hidden layer"
        for i, m in enumerate(layers):
            if i % 2 == 0 and type(m) is not nn.Linear:
                return f"layers.{i} is {kinds[i]}, expected nn.Linear ([{', '.join(kinds)}])"
            if i % 2 == 1 and not isinstance(m, ACTIVATIONS):
                return f"layers.{i} is {kinds[i]}, expected an activation ([{', '.join(kinds)}])"
            if i >= 2 and i % 2 == 0 and m.in_features != layers[i - 2].out_features:
                return f"layers.{i} reads {m.in_features} features, layers.{i - 2} writes {layers[i - 2].out_features}"
        return None

    def extra_repr(self) -> str:
        return f"hidden={[self.layers[i].out_features for i in self.linears[:-1]]}, widths={self.widths}"

    def units(self, width: float) -> list:
        """Hidden units kept per hidden layer at decoder ``width``."""
        return [channels_at(self.layers[i].out_features, width) for i in self.linears[:-1]]

    def macs_per_query(self, width: float) -> int:
        dims = [self.layers[self.linears[0]].in_features] + self.units(width) + [
            self.layers[self.linears[-1]].out_features]
        return sum(a * b for a, b in zip(dims, dims[1:]))

    def _full(self, x):
        lead = x.shape[:-1]
        return self.layers(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)

    def forward(self, x):
        widths = current_widths(self, x.shape[0])
        if len(set(widths)) == 1:
            if widths[0] == 1.0:
                return self._full(x)
            return self.forward_sliced(x, widths[0])
        return self.forward_masked(x, widths)

    def forward_sliced(self, x, width: float):
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1])
        ns, prev = self.units(width), None
        for k, i in enumerate(self.linears):
            lin = self.layers[i]
            w, b = lin.weight, lin.bias
            if k < len(ns):
                w, b = w[:ns[k]], (b[:ns[k]] if b is not None else None)
            if prev is not None:
                w = w[:, :prev]
            h = F.linear(h, w, b)
            if k < len(ns):
                h = self.layers[i + 1](h)
                prev = ns[k]
        return h.reshape(*lead, -1)

    def forward_masked(self, x, widths: list):
        per = [self.units(w) for w in widths]
        h = x
        for k, i in enumerate(self.linears):
            h = self.layers[i](h)
            if k < len(self.linears) - 1:
                mask = _units_mask([p[k] for p in per], h.shape[-1], h, channels_first=False)
                h = self.layers[i + 1](h * mask) * mask
        return h


class SlimPointwise(_SlimDecoder):
    """One 1x1 conv of SRNO's ``fc2(gelu(fc1(x)))``: ``role="out"`` (fc1) keeps its first
    ``floor(H * w)`` hidden filters, ``role="in"`` (fc2) reads only those channels.  Holds the
    original ``weight``/``bias`` Parameters under their names (keys ``fc1.weight``...)."""

    def __init__(self, conv: nn.Conv2d, role: str, hidden: int, config: AnySRConfig, state=None):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.role, self.hidden = role, hidden
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self._init_common(conv, config, state)

    @staticmethod
    def conv_problem(conv, what: str):
        if not isinstance(conv, nn.Conv2d) or type(conv).forward is not nn.Conv2d.forward:
            return f"{what} is {type(conv).__name__}, expected a plain nn.Conv2d"
        if tuple(conv.kernel_size) != (1, 1) or tuple(conv.stride) != (1, 1) or conv.groups != 1 \
                or tuple(conv.dilation) != (1, 1) or conv.padding not in ((0, 0), 0, "valid"):
            return (f"{what} is a {tuple(conv.kernel_size)} conv (stride {conv.stride}, groups {conv.groups}, "
                    f"padding {conv.padding}); only pointwise 1x1 convs can be sliced")
        return None

    def extra_repr(self) -> str:
        return f"role={self.role!r}, {self.in_channels}->{self.out_channels}, widths={self.widths}"

    def n_at(self, width: float) -> int:
        return channels_at(self.hidden, width)

    def macs_per_query(self, width: float) -> int:
        n = self.n_at(width)
        return (self.in_channels * n) if self.role == "out" else (n * self.out_channels)

    def forward(self, x):
        widths = current_widths(self, x.shape[0])
        if len(set(widths)) == 1:
            n = self.n_at(widths[0])
            if n == self.hidden:
                return F.conv2d(x, self.weight, self.bias)
            if self.role == "out":
                return F.conv2d(x, self.weight[:n], self.bias[:n] if self.bias is not None else None)
            return F.conv2d(x[:, :n] if x.shape[1] != n else x, self.weight[:, :n], self.bias)
        ns = [self.n_at(w) for w in widths]
        if self.role == "out":
            return F.conv2d(x, self.weight, self.bias) * _units_mask(ns, self.hidden, x, channels_first=True)
        return F.conv2d(x * _units_mask(ns, self.hidden, x, channels_first=True), self.weight, self.bias)


DECODER_TYPES = (SlimMLP, SlimPointwise)


def slim_decoders(model: nn.Module) -> list:
    """The slim decoder modules of a model (empty unless ``decoder="slim"``)."""
    return [m for m in unwrap(model).modules() if isinstance(m, DECODER_TYPES)]


class DecoderSourceHook:
    """Forward pre-hook on the model root: point the decoders of *this* instance at its
    first AnySR block, whose plan they read (DataParallel replicas get their own)."""

    def __call__(self, module: nn.Module, args: tuple):
        blocks = anysr_blocks(module)
        if blocks:
            for d in slim_decoders(module):
                _set_source(d, blocks[0])
        return None


# ---------------------------------------------------------------------------- surgery


def plan_decoder(model: nn.Module, config: AnySRConfig, adapter) -> list:
    """``[(parent, attr, new module, original module)]`` for the decoder the method `adapter` names
    (``adapter.slim_decoder(model)``), validated (structure and full-width equality on a random
    input); raises before touching anything."""
    where = adapter.slim_decoder(model)
    if where is not None and where[0] == "mlp":
        attr = where[1]
        mlp = getattr(model, attr)
        problem = SlimMLP.structure_problem(mlp)
        if problem is not None:
            raise UnsupportedBlockError(f"decoder='slim': {attr} cannot be slimmed: {problem}; the model was "
                                        "not changed (use decoder='off')")
        new = SlimMLP(mlp, config)
        _check_equal(mlp, new, (2, 3, mlp.layers[0].in_features), attr)
        return [(model, attr, new, mlp)]
    if where is not None and where[0] == "pointwise":
        (a1, a2) = where[1]
        fc1, fc2 = getattr(model, a1), getattr(model, a2)
        problem = SlimPointwise.conv_problem(fc1, a1) or SlimPointwise.conv_problem(fc2, a2)
        if problem is None and fc1.out_channels != fc2.in_channels:
            problem = f"{a1} writes {fc1.out_channels} channels but {a2} reads {fc2.in_channels}"
        if problem is not None:
            raise UnsupportedBlockError(f"decoder='slim': {a1}/{a2} cannot be slimmed: {problem}; the "
                                        "model was not changed (use decoder='off')")
        hidden = fc1.out_channels
        new1, new2 = SlimPointwise(fc1, "out", hidden, config), SlimPointwise(fc2, "in", hidden, config)
        _check_equal(fc1, new1, (2, fc1.in_channels, 3, 3), a1)
        _check_equal(fc2, new2, (2, fc2.in_channels, 3, 3), a2)
        return [(model, a1, new1, fc1), (model, a2, new2, fc2)]
    found = ", ".join(f"{n}: {type(m).__name__}" for n, m in model.named_children())
    raise UnsupportedBlockError(
        f"decoder='slim' needs the implicit decoder its method adapter names (LIIF/LTE `imnet` MLP, SRNO's "
        f"`fc1`/`fc2`); adapter {adapter.name!r} names none on {type(model).__name__} (children [{found}]); the "
        "model was not changed (use decoder='off')")


class _FullWidth:
    """Stand-in plan source: full width, no scale needed (conversion-time check)."""

    fixed_widths = [1.0]


def _check_equal(original: nn.Module, new: _SlimDecoder, shape: tuple, name: str) -> None:
    param = next(original.parameters())
    if param.device.type == "meta":
        return
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(*shape, generator=g).to(param.device, param.dtype)
    state = new._anysr_state
    _set_source(new, _FullWidth())
    new._anysr_state = type("S", (), {"config": AnySRConfig()})()
    try:
        with torch.no_grad():
            diff = float((original(x).float() - new(x).float()).abs().max())
    finally:
        new._anysr_state = state
        _set_source(new, None)
    if not diff <= EQUIVALENCE_TOLERANCE:
        raise UnsupportedBlockError(f"decoder='slim': {name} ({type(original).__name__}) has the structure of "
                                    f"a slimmable decoder but its forward differs by {diff:.3g} from the "
                                    "plain layers; the model was not changed (use decoder='off')")


def apply_decoder(model: nn.Module, planned: list, state) -> None:
    """Swap the planned decoder modules in and hook the root (after its plan hooks)."""
    first = anysr_blocks(model)[0]
    for parent, attr, new, _ in planned:
        new._anysr_state = state
        _set_source(new, first)
        parent._modules[attr] = new
    model.register_forward_pre_hook(DecoderSourceHook())


# ---------------------------------------------------------------------------- unit order


def _unit_scores(producer: torch.Tensor, bias, consumer: torch.Tensor) -> torch.Tensor:
    """Weight-only importance of each hidden unit: |incoming weights, bias| x |outgoing weights|."""
    inc = producer.flatten(1).square().sum(1)
    if bias is not None:
        inc = inc + bias.square()
    return inc.sqrt() * consumer.transpose(0, 1).flatten(1).norm(dim=1)


@torch.no_grad()
def _permute_units(producer, consumer) -> None:
    order = torch.argsort(_unit_scores(producer.weight, producer.bias, consumer.weight), descending=True, stable=True)
    producer.weight.copy_(producer.weight[order])
    if producer.bias is not None:
        producer.bias.copy_(producer.bias[order])
    consumer.weight.copy_(consumer.weight[:, order])


def sort_hidden_units(model: nn.Module) -> nn.Module:
    """Reorder every slim decoder's hidden units, most important first (opt-in, before fine-tuning).

    The sub-decoders are prefixes of the hidden units, but a pretrained decoder's unit order
    is arbitrary, so a narrow prefix starts far from useful.  Sorting the units by a
    weight-only importance (norm of the incoming weights and bias times the norm of the
    outgoing weights) and permuting the next layer's columns to match is a permutation of
    the same network: the full width computes the same function (up to float summation
    order), the same Parameter objects are updated in place, the keys do not change.
    Layers are sorted first to last, so each score sees the already permuted inputs.
    """
    decs = slim_decoders(model)
    if not decs:
        raise NotAnySRError("sort_hidden_units needs a model converted with AnySRConfig(decoder='slim')")
    pending = None
    for d in decs:
        if isinstance(d, SlimMLP):
            lins = [d.layers[i] for i in d.linears]
            for a, b in zip(lins, lins[1:]):
                _permute_units(a, b)
        elif d.role == "out":
            pending = d
        elif pending is not None:  # SRNO: fc1 ("out") then fc2 ("in")
            _permute_units(pending, d)
            pending = None
    return model


# ---------------------------------------------------------------------------- cost and export


def decoder_macs_per_query(model: nn.Module, width: float) -> int:
    """MACs per decoder call per query of the slim decoder at *encoder* width ``width``
    (LIIF calls it once per ensemble member)."""
    decs = slim_decoders(model)
    if not decs:
        return 0
    w = decs[0]._anysr_state.config.decoder_width_for(width)
    return sum(d.macs_per_query(w) for d in decs)


def _linear_copy(lin: nn.Linear, out_n=None, in_n=None) -> nn.Linear:
    w = lin.weight.detach()[:out_n] if out_n is not None else lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if out_n is not None and b is not None:
        b = b[:out_n]
    if in_n is not None:
        w = w[:, :in_n]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


class StaticMLP(nn.Module):
    """An exported ``imnet`` of one width: plain ``layers`` (keys ``layers.0.weight``...)."""

    def __init__(self, slim: SlimMLP, width: float):
        super().__init__()
        ns, layers, prev = slim.units(width), [], None
        for k, i in enumerate(slim.linears):
            out_n = ns[k] if k < len(ns) else None
            layers.append(_linear_copy(slim.layers[i], out_n, prev))
            if k < len(ns):
                layers.append(slim.layers[i + 1])
                prev = ns[k]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        lead = x.shape[:-1]
        return self.layers(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)


def _static_pointwise(slim: SlimPointwise, width: float) -> nn.Conv2d:
    n = slim.n_at(width)
    w, b = slim.weight.detach(), slim.bias.detach() if slim.bias is not None else None
    if slim.role == "out":
        w, b = w[:n], (b[:n] if b is not None else None)
    else:
        w = w[:, :n]
    new = nn.Conv2d(w.shape[1], w.shape[0], 1, bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def export_decoders(twin: nn.Module, width: float) -> None:
    """Replace the slim decoders of ``twin`` (a deep copy) by plain layers at encoder ``width``."""
    names = dict(twin.named_modules())
    for name, module in list(names.items()):
        if not isinstance(module, DECODER_TYPES):
            continue
        w = module._anysr_state.config.decoder_width_for(width)
        static = StaticMLP(module, w) if isinstance(module, SlimMLP) else _static_pointwise(module, w)
        static.train(module.training)
        parent_name, _, attr = name.rpartition(".")
        (names[parent_name] if parent_name else twin)._modules[attr] = static
    for m in twin.modules():
        for key in [k for k, h in m._forward_pre_hooks.items() if isinstance(h, DecoderSourceHook)]:
            del m._forward_pre_hooks[key]


__all__ = ["SlimMLP", "SlimPointwise", "current_widths", "sort_hidden_units", "slim_decoders", "plan_decoder", "apply_decoder",
           "decoder_macs_per_query", "export_decoders", "StaticMLP", "DecoderSourceHook"]
