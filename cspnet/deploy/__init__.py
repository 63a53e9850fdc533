"""Deployment: fused inference modules and export (ONNX, TorchScript)."""
