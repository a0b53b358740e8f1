"""Choices of ``elektronn2-predict``'s options that the command line needs before the
prediction modules are imported (this module imports nothing heavy)."""

#: output dtypes: float32 probabilities, or uint8 as round(p * 255)
OUTPUT_DTYPES = ('float32', 'uint8')
