"""Model export: ONNX (:mod:`export.onnx`), TensorRT engines (:mod:`export.tensorrt`), and the artifact cache
(:mod:`export.cache`)."""
