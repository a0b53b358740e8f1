"""Densities: element-wise negative log-likelihoods of targets under Gaussian and Beta
densities, and the Gaussian random variable of variational auto-encoders with its prior.
(ELEKTRONN2 kept them in ``neuromancer.loss`` and ``various``; those paths re-export them.)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ShapeError
from .node import Node
from .shape import TaggedShape

EPS = 1e-6


def _density_shape(first: TaggedShape, second: TaggedShape, target: TaggedShape,
                   names: tuple[str, str]) -> TaggedShape:
    """Shape of an element-wise NLL of ``target`` under a density of two parameters of equal
    shape; a samples axis 's' of the parameters is broadcast over the target."""
    if first.shape != second.shape:
        raise ShapeError(f"{names[0]} {first} and {names[1]} {second} must have equal shapes")
    stripped = first.delaxis('s') if 's' in first.tags else first
    if stripped.stripnone != target.stripnone or stripped.ndim != target.ndim:
        raise ShapeError(f"target {target} does not match {names[0]} {first}")
    return first


def _along_samples(target: torch.Tensor, parameter: TaggedShape) -> torch.Tensor:
    """``target`` with a length-1 samples axis where the density's parameters have one."""
    return target.unsqueeze(parameter.tag2index('s')) if 's' in parameter.tags else target


class GaussianNLL(Node):
    """Element-wise Gaussian negative log-likelihood of ``target`` under N(mu, sig**2).

    ``0.5 * log(2 pi) + log(sig) + 0.5 * ((target - mu) / sig)**2``; with
    ``sig_is_log`` the node ``sig`` holds log(sig). If ``mu`` has a samples axis 's'
    (from GaussianRV), the target is broadcast along it.
    """

    def __init__(self, mu: Node, sig: Node, target: Node, sig_is_log: bool = False,
                 name: str = 'g_nll', print_repr: bool = True):
        self.sig_is_log = sig_is_log
        super().__init__([mu, sig, target], name, print_repr)

    def _infer_shape(self, mu: TaggedShape, sig: TaggedShape, target: TaggedShape) -> TaggedShape:
        return _density_shape(mu, sig, target, ('mu', 'sig'))

    def forward(self, mu, sig, target, training=False):
        target = _along_samples(target, self.parents[0].shape)
        log_sig = sig if self.sig_is_log else torch.log(sig.clamp(min=EPS))
        sig = torch.exp(sig) if self.sig_is_log else sig
        return 0.5 * np.log(2 * np.pi) + log_sig + 0.5 * ((target - mu) / sig) ** 2


class BetaNLL(Node):
    """Element-wise negative log-likelihood of ``target`` in [0, 1] under a Beta density
    given by its ``mode`` in (0, 1) and ``concentration`` c > 2:
    ``a = mode (c - 2) + 1``, ``b = (1 - mode)(c - 2) + 1``,
    ``-log Beta(target; a, b) + softplus(-c)`` (the last term keeps c from shrinking).
    A samples axis 's' of ``mode`` is broadcast over the target, as in GaussianNLL.
    """

    def __init__(self, mode: Node, concentration: Node, target: Node, name: str = 'beta_nll',
                 print_repr: bool = True):
        super().__init__([mode, concentration, target], name, print_repr)

    def _infer_shape(self, mode: TaggedShape, conc: TaggedShape, target: TaggedShape) -> TaggedShape:
        return _density_shape(mode, conc, target, ('mode', 'concentration'))

    def forward(self, mode, conc, target, training=False):
        target = _along_samples(target, self.parents[0].shape)
        a = mode * (conc - 2) + 1
        b = (1 - mode) * (conc - 2) + 1
        log_pdf = (torch.lgamma(a + b) - torch.lgamma(a) - torch.lgamma(b)
                   + (a - 1) * torch.log(target + EPS) + (b - 1) * torch.log(1 - target + EPS))
        return -log_pdf + F.softplus(-conc)


class GaussianRV(Node):
    """Reparameterised Gaussian sample ``mu + exp(log_sig) * eps`` (variational auto-encoders).

    With ``n_samples > 0`` a samples axis 's' of that size is inserted after 'b'.
    In inference mode the mean ``mu`` is returned (broadcast along 's').
    """

    def __init__(self, mu: Node, log_sig: Node, n_samples: int = 0, name: str = 'state',
                 print_repr: bool = True):
        self.n_samples = int(n_samples)
        super().__init__([mu, log_sig], name, print_repr)

    def make_priorlayer(self) -> GaussianAEVBPrior:
        """The :class:`GaussianAEVBPrior` of this node's ``mu`` and ``log_sig`` (same samples)."""
        return GaussianAEVBPrior(self.parents[0], self.parents[1], self.n_samples,
                                 name=f"{self.name}_prior")

    def _infer_shape(self, mu: TaggedShape, log_sig: TaggedShape) -> TaggedShape:
        if mu.shape != log_sig.shape:
            raise ShapeError(f"mu {mu} and log_sig {log_sig} must have equal shapes")
        return mu.addaxis(1, self.n_samples, 's') if self.n_samples else mu

    def forward(self, mu, log_sig, training=False):
        if self.n_samples:
            mu, log_sig = mu.unsqueeze(1), log_sig.unsqueeze(1)
            shape = list(mu.shape)
            shape[1] = self.n_samples
            mu, log_sig = mu.expand(shape), log_sig.expand(shape)
        if not training:
            return mu.clone() if self.n_samples else mu
        return mu + torch.exp(log_sig) * torch.randn_like(mu)


class GaussianAEVBPrior(GaussianRV):
    """KL divergence of N(mu, exp(log_sig)**2) from N(0, 1), element-wise:
    ``0.5 * (mu**2 + sig**2 - 1 - 2 log_sig)`` (the prior term of auto-encoding
    variational Bayes). With ``n_samples`` it is repeated along the samples axis 's',
    so that it weighs as much as a loss on the samples of the matching GaussianRV
    (see :meth:`GaussianRV.make_priorlayer`).
    """

    def __init__(self, mu: Node, log_sig: Node, n_samples: int = 0, name: str = 'prior',
                 print_repr: bool = True):
        super().__init__(mu, log_sig, n_samples, name, print_repr)

    def forward(self, mu, log_sig, training=False):
        kl = 0.5 * (mu ** 2 + torch.exp(2 * log_sig) - 1 - 2 * log_sig)
        if self.n_samples:
            shape = list(kl.shape)
            shape.insert(1, self.n_samples)
            kl = kl.unsqueeze(1).expand(shape)
        return kl
