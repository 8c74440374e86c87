"""Deployment: export to ONNX / TorchScript (serving comes later)."""
