"""ONNX Runtime with I/O binding: inputs and outputs live in torch tensors on the engine's device.

Without a binding, ``session.run`` on the CUDA provider copies the input host -> device and every output device ->
host, and the pipeline then copies the feature map back to the GPU: the whole map crosses the bus twice per batch.
Here the tiles go to the device once (pinned, as the torch engine does) and ORT writes its outputs into torch tensors
that stay there. Works for any device ORT and torch share ("cpu" in tests, "cuda" in production).
"""

from __future__ import annotations

import numpy as np
import torch

ORT_TYPES = {"tensor(float)": (np.float32, torch.float32), "tensor(float16)": (np.float16, torch.float16)}


class OrtCudaBinding:
    """Bind ``tiles -> outputs`` of ``session`` to torch tensors on ``device`` (default: CUDA device 0)."""

    def __init__(self, session, input_name: str, output_names: list[str], device: torch.device | None = None) -> None:
        self.session, self.input_name, self.output_names = session, input_name, output_names
        self.device = device or torch.device("cuda", torch.cuda.current_device())
        meta = {o.name: o for o in session.get_outputs()}
        self.shapes = {name: list(meta[name].shape)[1:] for name in output_names}  # per tile
        self.types = {name: ORT_TYPES[meta[name].type] for name in output_names}
        for name, dims in self.shapes.items():
            if not all(isinstance(d, int) for d in dims):
                raise ValueError(f"ONNX output '{name}' has a dynamic non-batch shape {dims}; re-export the model")

    def _bind(self, binding, name: str, tensor: torch.Tensor, element_type, is_input: bool) -> None:
        kind = self.device.type
        index = self.device.index or 0
        bind = binding.bind_input if is_input else binding.bind_output
        bind(name, kind, index, element_type, list(tensor.shape), tensor.data_ptr())

    def run(self, tiles: np.ndarray) -> tuple[torch.Tensor, ...]:
        x = torch.from_numpy(np.ascontiguousarray(tiles))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()  # ORT reads the input on its own stream
        binding = self.session.io_binding()
        self._bind(binding, self.input_name, x, np.uint8, True)
        outputs = []
        for name in self.output_names:
            np_type, torch_type = self.types[name]
            out = torch.empty([x.shape[0], *self.shapes[name]], dtype=torch_type, device=self.device)
            self._bind(binding, name, out, np_type, False)
            outputs.append(out)
        self.session.run_with_iobinding(binding)  # returns once the outputs are written
        return tuple(outputs)
