"""Post-processing and training kernels. Each op has a plain-PyTorch ``reference`` (the oracle, CPU and ONNX path)
and is called only through its package's public function."""
