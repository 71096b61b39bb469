"""Compare detectors on the same images with the same thresholds
(``tools/compare.py``): ``runners`` (ppfacedet models and official ONNX
exports behind one interface), ``metrics`` (params, MACs, FPS), ``evaluate``
(the loop over models) and ``report`` (Markdown and CSV)."""
