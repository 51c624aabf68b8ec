"""The artifact contract, torch-free: what crosses from training to serving.

`manifest` (the pydantic Manifest, validated across fields), `transforms` (raw <-> model space),
`scores` (anomaly scores and their calibration), `graphs` (ONNX Runtime / TorchScript sessions) and
`predictor` (one artifact folder loaded, verified and warmed: encode / reconstruct / sample / score on
NumPy arrays). `training/` and `service/` both import this package; it imports neither.
"""
