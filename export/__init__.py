"""Model export: ONNX and TensorRT engines (built in their own modules, see the open export issue)."""
