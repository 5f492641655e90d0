"""Tiled evaluation of the convolutional transforms: bounded memory, the untiled result.

A transform made of convolutions, pixel shuffles and element-wise operations is *local*: every
output position depends on a bounded window of input positions. So it can run on overlapping
input tiles whose margin (the *halo*) covers that window, and each tile's output cropped to its
*core* equals the whole-image output (up to float summation order). Tiles touching the image
border start or end exactly at the border, so they see the same zero padding inside the
convolutions as the untiled run.

The window is not hand-counted: `footprint` traces the module with ``torch.fx`` and walks the
graph backwards, mapping an output interval to the input interval it needs through every
layer. An operation it does not understand raises `NotImplementedError` instead of guessing,
so an architecture change cannot silently break tiling (tests/test_tiling.py also checks
tiled == untiled with random weights).

`integer_hyper_geometry` does the same, by hand, for the exported integer hyper-synthesis
(a list of integer layers rather than an ``nn.Module``).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import torch
from torch import nn

from .spans import tile_starts
from torch.nn import functional as F

__all__ = ["Footprint", "footprint", "tile_starts", "iter_tiles", "apply_tiled",
           "integer_hyper_geometry"]

# Operations that act on every spatial position independently (any channel mixing is fine).
_POINTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.relu, torch.tanh,
    torch.sigmoid, torch.abs, torch.clamp, torch.exp, torch.sqrt, torch.rsqrt, torch.square,
    F.relu, F.leaky_relu, F.gelu, F.silu, F.softplus,
}
_POINTWISE_METHODS = {
    "add", "sub", "mul", "div", "neg", "relu", "tanh", "sigmoid", "abs", "clamp", "clamp_min",
    "clamp_max", "exp", "sqrt", "rsqrt", "square", "contiguous", "float", "double",
}
_POINTWISE_MODULES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.Sigmoid, nn.Tanh,
                      nn.GELU, nn.SiLU, nn.Softplus)


@dataclass(frozen=True)
class _Op:
    name: str
    kind: str                     # "input", "conv", "shuffle", "unshuffle", "pointwise"
    inputs: tuple[str, ...]       # spatial inputs only (parameters and constants are ignored)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    factor: int = 1


@dataclass(frozen=True)
class Footprint:
    """Where a local transform reads from: see `footprint`.

    ``scale``: output positions per input position along each axis (1/8 for the analysis,
    8 for the synthesis). ``align``: input tiles must start at multiples of it so that every
    strided layer sees the same sampling grid as in the whole image.
    """

    ops: tuple[_Op, ...]          # topological order, the input first
    output: str
    scale: Fraction
    align: int

    def input_span(self, axis: int, first: int, last: int) -> tuple[int, int]:
        """Input positions ``[lo, hi]`` (inclusive, may reach outside the image) that output
        positions ``[first, last]`` along ``axis`` (0: rows, 1: columns) depend on."""
        need = {self.output: (first, last)}
        for op in reversed(self.ops):
            if op.name not in need:
                continue                         # dead branch: influences no output
            a, b = need[op.name]
            if op.kind == "conv":
                k, s, p, d = (op.kernel[axis], op.stride[axis], op.padding[axis], op.dilation[axis])
                a, b = a * s - p, b * s - p + d * (k - 1)
            elif op.kind == "shuffle":
                a, b = a // op.factor, b // op.factor
            elif op.kind == "unshuffle":
                a, b = a * op.factor, b * op.factor + op.factor - 1
            for name in op.inputs:
                lo, hi = need.get(name, (a, b))
                need[name] = (min(lo, a), max(hi, b))
        return need[self.ops[0].name]

    def halo(self, axis: int = 0) -> tuple[int, int]:
        """Largest extra input margin (before, after) a tile core needs along ``axis``, over
        all core positions: the receptive-field radius in input units."""
        period = max(1, self.scale.numerator)    # output positions per alignment period
        before = after = 0
        for first in range(period):
            lo, hi = self.input_span(axis, first, first)
            core_lo = math.floor(first / self.scale)
            core_hi = math.ceil((first + 1) / self.scale) - 1
            before, after = max(before, core_lo - lo), max(after, hi - core_hi)
        return before, after


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _unsupported(node, what: str):
    return NotImplementedError(
        f"tiling: cannot derive the receptive field through {what} (fx node {node.name!r}); "
        "teach neuralcodec/tiling.py about it, or run this transform untiled")


def footprint(module: nn.Module) -> Footprint:
    """Trace ``module`` (one spatial tensor in, one out) and describe its locality."""
    from torch import fx

    graph_module = fx.symbolic_trace(module)
    modules = dict(graph_module.named_modules())
    ops: list[_Op] = []
    scale: dict[str, Fraction] = {}
    spatial: set[str] = set()
    output = None
    for node in graph_module.graph.nodes:
        inputs = tuple(a.name for a in node.all_input_nodes if a.name in spatial)
        if node.op == "placeholder":
            if ops:
                raise _unsupported(node, "a second input")
            ops.append(_Op(node.name, "input", ()))
            spatial.add(node.name)
            scale[node.name] = Fraction(1)
            continue
        if node.op == "get_attr" or (node.op != "output" and not inputs):
            continue                             # parameters and what is computed from them
        if node.op == "output":
            if not isinstance(node.args[0], fx.Node) or node.args[0].name not in spatial:
                raise _unsupported(node, "an output that is not one spatial tensor")
            output = node.args[0].name
            continue
        in_scale = {scale[name] for name in inputs}
        if len(in_scale) != 1:
            raise _unsupported(node, "inputs at different resolutions")
        s_in = in_scale.pop()
        target = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(target, nn.Conv2d):
            if target.padding_mode == "circular" or isinstance(target.padding, str):
                raise _unsupported(node, f"Conv2d padding {target.padding!r}/{target.padding_mode}")
            stride = _pair(target.stride)
            if stride[0] != stride[1]:
                raise _unsupported(node, "an anisotropic stride")
            op = _Op(node.name, "conv", inputs, _pair(target.kernel_size), stride,
                     _pair(target.padding), _pair(target.dilation))
            s_out = s_in / stride[0]
        elif isinstance(target, nn.PixelShuffle) or (
                node.op == "call_function" and node.target is F.pixel_shuffle):
            r = target.upscale_factor if target is not None else node.args[1]
            op, s_out = _Op(node.name, "shuffle", inputs, factor=int(r)), s_in * int(r)
        elif isinstance(target, nn.PixelUnshuffle) or (
                node.op == "call_function" and node.target is F.pixel_unshuffle):
            r = target.downscale_factor if target is not None else node.args[1]
            op, s_out = _Op(node.name, "unshuffle", inputs, factor=int(r)), s_in / int(r)
        elif (isinstance(target, _POINTWISE_MODULES)
              or (node.op == "call_function" and node.target in _POINTWISE_FUNCTIONS)
              or (node.op == "call_method" and node.target in _POINTWISE_METHODS)):
            op, s_out = _Op(node.name, "pointwise", inputs), s_in
        else:
            what = type(target).__name__ if target is not None else f"{node.op} {node.target}"
            raise _unsupported(node, what)
        ops.append(op)
        spatial.add(node.name)
        scale[node.name] = s_out
    if output is None:
        raise NotImplementedError("tiling: the traced module has no output")
    align = math.lcm(*(s.denominator for s in scale.values()))
    return Footprint(tuple(ops), output, scale[output], align)


def _input_window(fp: Footprint, axis: int, first: int, stop: int, length: int) -> tuple[int, int]:
    """Aligned input slice ``[lo, hi)`` inside ``[0, length)`` covering output ``[first, stop)``."""
    lo, hi = fp.input_span(axis, first, stop - 1)
    lo = max(0, lo // fp.align * fp.align)
    hi = min(length, -(-(hi + 1) // fp.align) * fp.align)
    return lo, hi


def iter_tiles(fp: Footprint, module: Callable, size: tuple[int, int], core: int,
               read: Callable[[slice, slice], torch.Tensor]
               ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Run ``module`` tile by tile over an input of spatial ``size`` (rows, columns).

    ``core``: tile core in *output* positions. ``read(rows, cols)`` returns the input tile
    (N, C, h, w) for those input slices. Yields ``(out_rows, out_cols, output)`` with
    ``output`` already cropped to the core; together the cores cover the whole output once.
    """
    out_size = []
    for length in size:
        out = length * fp.scale
        if out.denominator != 1 or length % fp.align:
            raise ValueError(f"tiling: input size {size} is not a multiple of {fp.align}")
        out_size.append(int(out))
    for r0, r1 in tile_starts(out_size[0], core):
        lo_r, hi_r = _input_window(fp, 0, r0, r1, size[0])
        for c0, c1 in tile_starts(out_size[1], core):
            lo_c, hi_c = _input_window(fp, 1, c0, c1, size[1])
            result = module(read(slice(lo_r, hi_r), slice(lo_c, hi_c)))
            off_r, off_c = int(lo_r * fp.scale), int(lo_c * fp.scale)
            if (off_r + result.shape[-2] < r1 or off_c + result.shape[-1] < c1):
                raise RuntimeError("tiling: a tile's output does not cover its core")
            yield (slice(r0, r1), slice(c0, c1),
                   result[..., r0 - off_r:r1 - off_r, c0 - off_c:c1 - off_c])


def apply_tiled(module: nn.Module, x: torch.Tensor, core: int,
                fp: Footprint | None = None) -> torch.Tensor:
    """``module(x)`` computed in tiles of ``core`` output positions (x: N, C, H, W)."""
    fp = fp or footprint(module)
    out = None
    for rows, cols, tile in iter_tiles(fp, module, tuple(x.shape[-2:]), core,
                                       lambda r, c: x[..., r, c]):
        if out is None:
            shape = tuple(x.shape[:-3]) + (tile.shape[-3],) + tuple(
                int(n * fp.scale) for n in x.shape[-2:])
            out = tile.new_empty(shape)
        out[..., rows, cols] = tile
    return out


from .model.integer_hyper import integer_hyper_geometry  # noqa: E402,F401  (re-exported)
