"""Ensembles: several models predict the same blocks, their probabilities averaged.

An ensemble of nets (e.g. the two FIB-25 boundary U-Nets of ``docs/results.rst``)
averages the class probabilities of its members voxel by voxel: float32, summed in the
order the models are given, then divided by their number -- the mean of the members'
own predictions. Blockwise, a block's input is read once with the widest context any
member needs (:meth:`EnsemblePredictor.input_box`); the members predict it one after
another, each from its own part of that input, so a block task holds one member's
activations and a running sum of the outputs.

Members must share the input channels and the output features; their back ends,
fields of view and strides may differ. The block shape is one that every member
accepts: each member's back end may change a requested block (MFP snaps it to sizes the
rebuilt net accepts, the 'patch' back end rounds it up to the net's internal stride), so
:func:`resolve_ensemble_spec` asks the members in turn until a round of them leaves the
block as it is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConfigError, ShapeError
from ..neuromancer.footprint import Footprint
from .geometry import Box
from .predictors import BlockPredictor, PredictorSpec, resolve_spec

#: rounds of :func:`resolve_ensemble_spec` before members that keep changing the block
#: shape are refused
_ROUNDS = 4


@dataclass(frozen=True)
class EnsembleSpec:
    """The resolved, picklable recipe of an ensemble: one :class:`.PredictorSpec` per
    member, all for the same block shape."""
    members: tuple[PredictorSpec, ...]

    @property
    def model_paths(self) -> tuple[str, ...]:
        return tuple(member.model_path for member in self.members)

    @property
    def backend(self) -> str:
        """E.g. ``'ensemble(mfp, patch)'``."""
        return f"ensemble({', '.join(member.backend for member in self.members)})"

    @property
    def grows_with_block(self) -> bool:
        """Whether a member's activations grow with the block (:mod:`.memory`)."""
        return any(member.grows_with_block for member in self.members)

    def build(self) -> EnsemblePredictor:
        return EnsemblePredictor([member.build() for member in self.members])

    def describe(self) -> dict:
        """JSON-able description (without the paths), for manifests and logs."""
        return {'ensemble': [member.describe() for member in self.members]}


class EnsemblePredictor:
    """A block predictor (:class:`.predictors.BlockPredictor`) averaging its members'.

    ``node`` and ``geometry`` are the first member's (all share the input channels and
    the output features)."""

    def __init__(self, members: Sequence[BlockPredictor]):
        if not members:
            raise ConfigError("An ensemble needs at least one member")
        self.members = list(members)
        self.node = self.members[0].node
        self.geometry = self.members[0].geometry

    def input_box(self, out_box: Box) -> Box:
        """The bounding box of the members' input boxes."""
        boxes = [member.input_box(out_box) for member in self.members]
        return Box(np.min([b.lo for b in boxes], axis=0), np.max([b.hi for b in boxes], axis=0))

    def predict(self, raw: np.ndarray, out_box: Box) -> np.ndarray:
        """(c, *input_box(out_box).shape) raw -> (f, *out_box.shape) float32, the mean of
        the members' probabilities."""
        in_box = self.input_box(out_box)
        total: np.ndarray | None = None
        for member in self.members:
            own = member.input_box(out_box).slices_in(in_box)
            probabilities = member.predict(raw[(slice(None),) + own], out_box)
            if total is None:
                total = probabilities.astype(np.float32, copy=True)
            else:
                total += probabilities
        assert total is not None
        total /= len(self.members)
        return total

    def activation_bytes(self, out_box: Box) -> int:
        """The largest member's activations and the running sum of the outputs."""
        return (max(member.activation_bytes(out_box) for member in self.members)
                + 4 * self.geometry.n_outputs * out_box.size)

    def executed_macs(self, out_box: Box) -> int:
        return sum(member.executed_macs(out_box) for member in self.members)


def check_members(geometries: Sequence[Footprint], model_paths: Sequence[str]) -> None:
    """Raise a ShapeError unless all members share the input channels and output
    features of the first."""
    first, *others = zip(geometries, model_paths)
    for geometry, path in others:
        for what in ('n_channels', 'n_outputs'):
            if getattr(geometry, what) != getattr(first[0], what):
                raise ShapeError(
                    f"The models of an ensemble must agree in input channels and output "
                    f"features: {path} has {what}={getattr(geometry, what)}, {first[1]} has "
                    f"{getattr(first[0], what)}")


def widest_context(geometries: Sequence[Footprint]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(before, after) per axis (z, y, x): the most context any of the nets needs."""
    before = tuple(int(v) for v in np.max([g.context[0] for g in geometries], axis=0))
    after = tuple(int(v) for v in np.max([g.context[1] for g in geometries], axis=0))
    return before, after


def resolve_ensemble_spec(model_paths: Sequence[str | os.PathLike], block_shape: Sequence[int],
                          region: Box, mfp: str = 'auto', blend: str = 'auto',
                          overlap: float = 0.25, precision: str | None = None,
                          tta: str = 'none') -> tuple[EnsembleSpec, tuple[int, ...]]:
    """:func:`.predictors.resolve_spec` for every member, with a block shape all of them
    accept (module docstring); the arguments are those of ``resolve_spec``."""
    block = tuple(int(b) for b in block_shape)
    asked = []
    for _ in range(_ROUNDS):
        start = block
        members = []
        for path in model_paths:
            spec, block = resolve_spec(path, block, region, mfp, blend, overlap, precision, tta)
            members.append(spec)
        asked.append(start)
        if block == start:
            return EnsembleSpec(tuple(members)), block
    raise ShapeError(f"The models of the ensemble {[str(p) for p in model_paths]} accept no "
                     f"common block shape near {tuple(block_shape)} (each changed the shape "
                     f"the others chose: {asked}); give another --block-shape, or --mfp off")
