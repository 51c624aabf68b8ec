"""latentserve's online half: a FastAPI service over exported ONNX / TorchScript graphs."""
