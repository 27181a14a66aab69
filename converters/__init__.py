"""Converters (installed as ``probscale_edge.converters``): PyTorch -> ONNX, int8 quantization, mobile formats.

Every conversion ends with a parity check against its reference, recorded in a plain report.
"""
