"""Deployment: fused inference modules (fuse.py), export to ONNX / OpenVINO / TorchScript at fp32, fp16, bf16 or int8
with optional NMS inside (export.py, onnx_export.py, openvino_export.py, nms.py), and running an exported file like
the model it came from (runtime.load_exported)."""
