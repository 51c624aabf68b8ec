"""Graph backends: run one exported graph (ONNX Runtime or TorchScript) on NumPy arrays.

The one place that sets up ONNX Runtime sessions (export's parity checks and the predictor use it).

A `Backend` is chosen once per process from the settings and checked at start-up: asking
for CUDA and silently getting the CPU is refused. torch is imported only when the
TorchScript backend is chosen, so that the ONNX service installs without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from artifact.errors import BackendUnavailable

if TYPE_CHECKING:
    from artifact.manifest import GraphSpec

log = logging.getLogger(__name__)

# A 75-byte ONNX graph (y = Identity(x), float32 (N, 1)): lets the start-up check ask ONNX
# Runtime for the CUDA provider and see whether a session really gets it, before any model loads.
_PROBE_ONNX = (
    b'\x08\x08\x12\x00:?\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x05probeZ\x11\n\x01x\x12\x0c\n\n'
    b"\x08\x01\x12\x06\n\x00\n\x02\x08\x01b\x11\n\x01y\x12\x0c\n\n\x08\x01\x12\x06\n\x00\n\x02\x08\x01B\x04\n\x00\x10\r"
)


class Graph(Protocol):
    """One loaded graph: positional float32 inputs -> outputs in the manifest's order."""

    provider: str

    def __call__(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]: ...


class OnnxGraph:
    def __init__(self, path: Path, spec: GraphSpec, device: str, threads: int) -> None:
        self.session = onnx_session(path, device, threads)
        active = self.session.get_providers()
        if device == "cuda" and active[0] != "CUDAExecutionProvider":
            raise BackendUnavailable(f"{path.name}: asked for CUDAExecutionProvider, the session got {active}")
        self.provider = active[0]
        self.input_names = [t.name for t in spec.inputs]
        self.output_names = [t.name for t in spec.outputs]
        found_in = [i.name for i in self.session.get_inputs()]
        found_out = [o.name for o in self.session.get_outputs()]
        if found_in != self.input_names or found_out != self.output_names:
            raise ValueError(
                f"{path.name} has inputs {found_in} and outputs {found_out}, "
                f"the manifest says {self.input_names} and {self.output_names}"
            )

    def __call__(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(self.output_names, dict(zip(self.input_names, inputs, strict=True))))


class TorchScriptGraph:
    def __init__(self, path: Path, spec: GraphSpec, device: str, threads: int) -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.module = torch.jit.load(str(path), map_location=self.device).eval()
        self.provider = f"torch-{device}"
        self.n_outputs = len(spec.outputs)

    def __call__(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in inputs]
            out = self.module(*args)
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        if len(outs) != self.n_outputs:
            raise ValueError(f"graph returned {len(outs)} outputs, the manifest says {self.n_outputs}")
        return tuple(np.ascontiguousarray(t.detach().cpu().numpy()) for t in outs)


class Backend:
    """The graph format and device for this process; `check()` fails fast with a clear message."""

    def __init__(self, runtime: str, device: str, threads: int = 1) -> None:
        self.runtime = runtime  # the manifest's graph format: "onnx" or "torchscript"
        self.device = device
        self.threads = threads
        self.provider = ""

    def check(self) -> None:
        if self.runtime == "onnx":
            self.provider = _check_onnx(self.device, self.threads)
        else:
            self.provider = _check_torch(self.device, self.threads)
        log.info("backend %s on %s (%s)", self.runtime, self.device, self.provider)

    def open(self, path: Path, spec: GraphSpec) -> Graph:
        if self.runtime == "onnx":
            return OnnxGraph(path, spec, self.device, self.threads)
        return TorchScriptGraph(path, spec, self.device, self.threads)

    def describe(self) -> dict[str, str]:
        return {"runtime": self.runtime, "device": self.device, "provider": self.provider}


def onnx_session(path: Path | bytes, device: str = "cpu", threads: int = 1):  # -> onnxruntime.InferenceSession
    """An ONNX Runtime session with this project's options (threads pinned, no spinning)."""
    import onnxruntime as ort

    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, sess_options=_session_options(threads), providers=_providers(device))


def _providers(device: str) -> list[str]:
    # CPU stays listed after CUDA so that ops without a CUDA kernel still run.
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def _session_options(threads: int):  # -> onnxruntime.SessionOptions
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1  # the graphs are chains: no parallel branches to run
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # With --threads > 1, spinning pool threads burn the CPU the event loop needs: measured on a
    # 256-row digits encoder, 125 µs per call spinning against 46 µs without (bench/serve_results.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: ORT's warnings are noise at serving time
    return opts


def _check_onnx(device: str, threads: int) -> str:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise BackendUnavailable(
            f"--device cuda needs onnxruntime's CUDAExecutionProvider, but onnxruntime "
            f"{ort.__version__} offers only {available}; install onnxruntime-gpu with the CUDA "
            f"libraries, use --runtime torchscript, or use --device cpu"
        )
    session = onnx_session(_PROBE_ONNX, device, threads)
    active = session.get_providers()
    if device == "cuda" and active[0] != "CUDAExecutionProvider":
        raise BackendUnavailable(
            f"--device cuda: onnxruntime lists CUDAExecutionProvider but a session got {active} "
            f"(CUDA or cuDNN libraries missing?); refusing to run on the CPU instead"
        )
    return active[0]


def _check_torch(device: str, threads: int) -> str:
    try:
        import torch
    except ImportError as e:
        raise BackendUnavailable(
            "--runtime torchscript needs torch, which is not installed here "
            "(install the training extra, or use --runtime onnx)"
        ) from e
    torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"--device cuda: torch {torch.__version__} sees no CUDA device; use --device cpu")
    return f"torch-{device}"
