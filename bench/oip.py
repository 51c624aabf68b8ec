"""OIP benchmark: one client, back to back, on one `latentserve serve`: the Open Inference Protocol
(tritonclient, binary and JSON tensors) against the native /encode (.npy and JSON), side by side.

    .venv/bin/python -m bench.oip --url http://127.0.0.1:8000 [--model digits-ae] [--seconds 3] [--repeat 3]

Reports requests/s per system for 1-row and 256-row /encode requests and the ratio of each to the
native .npy endpoint; the systems take turns within each repeat, so that the ratios are measured
side by side. Every loop is bounded in time; any failed request stops the run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import httpx
import numpy as np
import tritonclient.http as triton


def systems(url: str, model: str) -> dict[str, Callable[[np.ndarray], None]]:
    http = httpx.Client(base_url=url, timeout=30)
    client = triton.InferenceServerClient(url.removeprefix("http://"))

    def npy(x: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, x)
        r = http.post(
            "/encode",
            params={"model": model},
            content=buffer.getvalue(),
            headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
        )
        r.raise_for_status()

    def native_json(x: np.ndarray) -> None:
        http.post("/encode", json={"model": model, "inputs": x.tolist()}).raise_for_status()

    def oip(binary: bool) -> Callable[[np.ndarray], None]:
        def call(x: np.ndarray) -> None:
            tensor = triton.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            out = [triton.InferRequestedOutput("z", binary_data=binary)]
            client.infer(f"{model}.encode", [tensor], outputs=out).as_numpy("z")

        return call

    return {"native-npy": npy, "native-json": native_json, "oip-binary": oip(True), "oip-json": oip(False)}


def rate(call: Callable[[np.ndarray], None], x: np.ndarray, seconds: float) -> float:
    for _ in range(20):  # warm-up
        call(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds and n < 100_000:
        call(x)
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default="digits-ae")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    width = httpx.get(f"{args.url}/models/{args.model}").json()["versions"][0]["n_features"]
    calls = systems(args.url, args.model)
    print("| rows | system | requests/s (median) | vs native-npy |\n|---|---|---|---|")
    for rows in (1, 256):
        x = np.random.default_rng(0).uniform(0, 16, (rows, width)).astype(np.float32)
        runs: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeat):
            for name, call in calls.items():
                runs[name].append(rate(call, x, args.seconds))
        base = statistics.median(runs["native-npy"])
        for name, values in runs.items():
            median = statistics.median(values)
            print(f"| {rows} | {name} | {median:.0f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
