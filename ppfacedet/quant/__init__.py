"""Quantization that is not export: the QAT wrapping of a training model."""
from .qat import apply_qat, quant_settings
