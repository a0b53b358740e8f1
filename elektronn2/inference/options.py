"""Choices of ``elektronn2-predict``'s options that the command line needs before the
prediction modules are imported (this module imports nothing heavy)."""

#: output dtypes: float32 probabilities, or uint8 as round(p * 255)
OUTPUT_DTYPES = ('float32', 'uint8')
#: --mfp: the net rebuilt with a patch of one block, with max-fragment pooling for strided
#: nets ('auto': when that needs fewer operations than tiling the saved patch)
MFP_CHOICES = ('auto', 'on', 'off')
#: --blend: window blending for nets that pad inside ('auto': exactly those nets)
BLEND_CHOICES = ('auto', 'off', 'constant', 'gaussian')
#: --tta: test-time augmentation (the same as elektronn2.neuromancer.dense.TTA_CHOICES,
#: repeated here so that --help does not import torch)
TTA_CHOICES = ('none', 'flips', 'dihedral')
