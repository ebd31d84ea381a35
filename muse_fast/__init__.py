"""muse-fast: nucleus detection and classification on H&E whole-slide images with MUSE networks.

Entry points: the ``muse-fast`` CLI (:mod:`muse_fast.cli`), :func:`muse_fast.model.weights.load_weights`,
:func:`muse_fast.runtime.engines.create_engine`, :func:`muse_fast.runtime.pipeline.run_slide` and
:func:`muse_fast.runtime.predict.predict_image`. Heavy backends (cuCIM, onnxruntime, TensorRT, Triton) are imported
only by the code that uses them.
"""

__version__ = "0.1.0"
