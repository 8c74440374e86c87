"""Deployment: export to ONNX / TorchScript, online inference (runtime, dynamic batcher, HTTP app)."""
