"""Soak test: N clients for T seconds against a real server on loopback, then SIGTERM.

    python -m bench.soak --models model_repository [--clients 32] [--seconds 300] [--out bench/results/soak.json]

The server is started here, on 127.0.0.1 only, on a copy of the repository (the reload adds a
version to the copy) and with an API key, so that every endpoint is reachable. Each client
sends a mix of valid requests to every endpoint and malformed or hostile ones (wrong width, NaN,
unknown model, wrong kind, no key, wrong key, not JSON, over the body limit), each with the
statuses it may get. Half-way through a new version is published and `POST /admin/reload`
swaps it in; at three quarters SIGHUP reloads again; at the end SIGTERM while the clients keep
sending. The clients stand behind a load balancer's view of the server: a health check polls
/readyz every 0.5 s, and once it answers 503 no new request is routed (the server keeps serving
for its shutdown delay, 2 s here, so that this is seen before the port closes).

Reported: requests by kind and status, valid requests that failed (every valid request sent
must get 200, through both reloads and the drain), 5xx answers, the server's resident memory
(after warm-up, around the reload, at the end) and its exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from artifact.manifest import Manifest
from service.schemas import DIGIT_0, DIGIT_1, NOISE

MAX_BODY = 256 * 1024  # small, so that sending a body over it stays cheap
ROWS = [DIGIT_0, DIGIT_1, NOISE]
PROBE_PERIOD_S = 0.5


@dataclass
class Call:
    kind: str  # e.g. "encode" or "bad:wrong-width"
    method: str
    path: str
    ok: frozenset[int]  # statuses that count as correct answers
    json: object = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.kind.startswith("bad:")


def calls(rng: random.Random, key: str) -> Call:
    """One request drawn from the mix: about two valid ones for each malformed one."""
    auth = {"Authorization": f"Bearer {key}"} if rng.random() < 0.5 else {"X-API-Key": key}
    rows = [rng.choice(ROWS) for _ in range(rng.choice((1, 1, 2, 8, 32, 64)))]
    model = rng.choice(("digits-ae", "digits-rae", "digits-vae"))
    ok = frozenset({200})
    valid = [
        Call("encode", "POST", "/encode", ok, {"model": model, "inputs": rows}, headers=auth),
        Call("reconstruct", "POST", "/reconstruct", ok, {"model": model, "inputs": rows}, headers=auth),
        Call(
            "sample", "POST", "/sample", ok, {"model": rng.choice(("digits-gan", model)), "n": len(rows)}, headers=auth
        ),
        Call("sample-latents", "POST", "/sample", ok, {"model": model, "latents": [[0.1] * 16] * 4}, headers=auth),
        Call("anomaly-score", "POST", "/anomaly-score", ok, {"model": "digits-gan", "inputs": rows}, headers=auth),
        Call("explain", "POST", "/anomaly-score", ok, {"model": model, "inputs": rows, "explain": True}, headers=auth),
        Call("models", "GET", "/models", ok, headers=auth),
        Call("model", "GET", f"/models/{model}", ok, headers=auth),
        Call("healthz", "GET", "/healthz", ok),
        Call("readyz", "GET", "/readyz", ok),
        Call("metrics", "GET", "/metrics", ok),
    ]
    junk = json.dumps({"model": model, "inputs": [[1.0] * 64] * 1000}).encode()  # over MAX_BODY
    bad = [
        Call(
            "bad:wrong-width",
            "POST",
            "/encode",
            frozenset({422}),
            {"model": model, "inputs": [[1.0] * 63]},
            headers=auth,
        ),
        Call(
            "bad:nan",
            "POST",
            "/encode",
            frozenset({422}),
            content=b'{"inputs": [[NaN]]}',
            headers={**auth, "content-type": "application/json"},
        ),
        Call("bad:unknown-model", "POST", "/sample", frozenset({404}), {"model": "nope", "n": 1}, headers=auth),
        Call(
            "bad:wrong-kind", "POST", "/encode", frozenset({400}), {"model": "digits-gan", "inputs": rows}, headers=auth
        ),
        Call("bad:no-key", "POST", "/encode", frozenset({401}), {"model": model, "inputs": rows}),
        Call("bad:wrong-key", "GET", "/models", frozenset({401}), headers={"X-API-Key": "x" * 32}),
        Call(
            "bad:not-json",
            "POST",
            "/reconstruct",
            frozenset({422}),
            content=b"\xff{",
            headers={**auth, "content-type": "application/json"},
        ),
        Call(
            "bad:too-large",
            "POST",
            "/encode",
            frozenset({413}),
            content=junk,
            headers={**auth, "content-type": "application/json"},
        ),
        Call("bad:unknown-path", "GET", "/admin/../etc/passwd", frozenset({401, 404}), headers=auth),
        Call("bad:too-many-rows", "POST", "/sample", frozenset({422}), {"model": model, "n": 10**6}, headers=auth),
    ]
    return rng.choice(valid) if rng.random() < 0.67 else rng.choice(bad)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Soak:
    def __init__(self, models: Path, clients: int, seconds: float, warmup: float, seed: int) -> None:
        self.clients, self.seconds, self.warmup, self.seed = clients, seconds, warmup, seed
        self.workdir = Path(tempfile.mkdtemp(prefix="soak-"))
        self.repository = self.workdir / "models"
        shutil.copytree(models, self.repository, ignore=shutil.ignore_patterns(".*"))
        self.key = secrets.token_urlsafe(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (kind, status or error name)
        self.failed_valid: list[str] = []
        self.wrong_answers: list[str] = []
        self.server_errors: Counter[str] = Counter()
        self.rss: list[tuple[float, int]] = []  # (seconds since start, kB)
        self.events: dict[str, float] = {}
        self.stopping = False  # SIGTERM sent
        self.routing = True  # the health check still sees the server ready
        self.in_flight = 0

    # ----- the server ------------------------------------------------------------------------
    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTSERVE_")}
        env |= {
            "LATENTSERVE_API_KEY": self.key,
            "LATENTSERVE_MAX_BODY_BYTES": str(MAX_BODY),
            "LATENTSERVE_MAX_CONCURRENCY": str(max(64, 4 * self.clients)),
            "LATENTSERVE_SHUTDOWN_DELAY_S": "2",
            "LATENTSERVE_SHUTDOWN_GRACE_S": "10",
            "LATENTSERVE_LOG_LEVEL": "warning",
        }
        script = Path(sys.executable).with_name("latentserve")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "latentserve"]
        command += ["serve", "--models", str(self.repository), "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        self.log = open(self.workdir / "serve.log", "wb")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}; log in {self.workdir}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server never became ready")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def publish(self, version: int) -> None:
        src, dst = self.repository / "digits-ae" / "1", self.repository / "digits-ae" / str(version)
        tmp = self.repository / "digits-ae" / f".tmp-{version}"  # hidden until complete, as an export does
        shutil.copytree(src, tmp)
        Manifest.read(tmp).model_copy(update={"version": version}).write(tmp)
        tmp.rename(dst)

    # ----- the clients -----------------------------------------------------------------------
    async def client(self, i: int, until: float) -> None:
        rng = random.Random(self.seed * 1000 + i)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as c:
            while self.routing and time.monotonic() < until:
                call = calls(rng, self.key)
                self.in_flight += 1
                try:
                    r = await c.request(
                        call.method, call.path, json=call.json, content=call.content, headers=call.headers
                    )
                except httpx.HTTPError as e:  # refused, reset or cut: a failure for any request
                    self.outcomes[(call.kind, type(e).__name__)] += 1
                    self.failed_valid.append(f"{call.kind}: {type(e).__name__} {e}")
                    continue
                finally:
                    self.in_flight -= 1
                status = r.status_code
                self.outcomes[(call.kind, str(status))] += 1
                stopping_probe = call.kind == "readyz" and self.stopping and status == 503
                if status >= 500 and not stopping_probe:
                    self.server_errors[f"{call.kind} {status}: {r.text[:120]}"] += 1
                if status not in call.ok and not stopping_probe:
                    (self.failed_valid if call.valid else self.wrong_answers).append(
                        f"{call.kind}: {status} {r.text[:160]}"
                    )

    async def monitor(self, start: float, until: float) -> None:
        while time.monotonic() < until and self.process.poll() is None:
            self.rss.append((time.monotonic() - start, self.rss_kb()))
            await asyncio.sleep(1.0)

    async def health_check(self, until: float) -> None:
        """The load balancer's probe: stop routing at the first 503 from /readyz."""
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as c:
            while time.monotonic() < until:
                r = await c.get("/readyz")
                if r.status_code != 200:
                    self.events["in_flight_when_unrouted"] = self.in_flight
                    self.events["unrouted_after_sigterm_s"] = round(time.monotonic() - self.events["sigterm_t"], 2)
                    self.routing = False
                    return
                await asyncio.sleep(PROBE_PERIOD_S)

    async def operator(self, start: float) -> None:
        """Reload by HTTP at T/2, by SIGHUP at 3T/4, SIGTERM at T."""
        await asyncio.sleep(self.seconds / 2)
        self.events["rss_before_reload_kb"] = self.rss_kb()
        self.publish(2)
        t = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as c:
            r = await c.post("/admin/reload", headers={"X-API-Key": self.key})
        self.events["reload_s"] = round(time.monotonic() - t, 3)
        self.events["reload_status"] = r.status_code
        self.events["reload_loaded"] = r.json().get("loaded")
        await asyncio.sleep(2)
        self.events["rss_after_reload_kb"] = self.rss_kb()
        await asyncio.sleep(max(0.0, start + 0.75 * self.seconds - time.monotonic()))
        self.publish(3)
        self.process.send_signal(signal.SIGHUP)
        await asyncio.sleep(max(0.0, start + self.seconds - time.monotonic()))
        self.events["rss_end_kb"] = self.rss_kb()
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as c:
            self.events["versions_before_sigterm"] = (await c.get("/readyz")).json()["models"]["digits-ae"]
        self.stopping = True
        self.events["sigterm_t"] = time.monotonic()
        self.events["in_flight_at_sigterm"] = self.in_flight
        self.process.send_signal(signal.SIGTERM)

    async def run(self) -> None:
        start = time.monotonic()
        until = start + self.seconds + 20  # the clients go on through the drain, until the exit
        tasks = [asyncio.create_task(self.client(i, until)) for i in range(self.clients)]
        tasks += [asyncio.create_task(self.monitor(start, until)), asyncio.create_task(self.operator(start))]
        tasks.append(asyncio.create_task(self.health_check(until)))
        await asyncio.gather(*tasks)

    # ----- the report ------------------------------------------------------------------------
    def report(self, exit_code: int | None, wall_s: float) -> dict:
        after_warmup = [kb for t, kb in self.rss if t >= self.warmup]
        warm = after_warmup[0] if after_warmup else 0
        end = self.events.get("rss_end_kb", 0)
        reload_step = self.events.get("rss_after_reload_kb", 0) - self.events.get("rss_before_reload_kb", 0)
        by_kind: dict[str, dict[str, int]] = {}
        for (kind, status), n in sorted(self.outcomes.items()):
            by_kind.setdefault(kind, {})[status] = n
        valid = sum(n for (k, _), n in self.outcomes.items() if not k.startswith("bad:"))
        return {
            "clients": self.clients,
            "seconds": self.seconds,
            "requests": sum(self.outcomes.values()),
            "requests_per_s": round(sum(self.outcomes.values()) / wall_s, 1),
            "valid_requests_sent": valid,
            "failed_valid_requests": len(self.failed_valid),
            "failed_valid_examples": self.failed_valid[:10],
            "malformed_wrong_answers": len(self.wrong_answers),
            "malformed_wrong_examples": self.wrong_answers[:10],
            "server_errors_5xx": sum(self.server_errors.values()),
            "server_error_examples": dict(self.server_errors.most_common(5)),
            "by_kind": by_kind,
            "rss_kb": {
                "after_warmup": warm,
                "before_reload": self.events.get("rss_before_reload_kb"),
                "after_reload": self.events.get("rss_after_reload_kb"),
                "end": end,
                "max": max((kb for _, kb in self.rss), default=0),
            },
            "rss_growth_pct": round(100 * (end - warm) / warm, 2) if warm else None,
            "rss_growth_pct_without_reload_step": round(100 * (end - warm - reload_step) / warm, 2) if warm else None,
            "reload": {k: self.events.get(k) for k in ("reload_status", "reload_s", "reload_loaded")},
            "versions_after_sighup": self.events.get("versions_before_sigterm"),
            "drain": {
                k: self.events.get(k)
                for k in ("in_flight_at_sigterm", "unrouted_after_sigterm_s", "in_flight_when_unrouted")
            },
            "exit_code": exit_code,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=Path("model_repository"), help="the four digits models")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--warmup", type=float, default=None, help="default: a tenth of --seconds, at most 30")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the report here as JSON")
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 256 and 10 <= args.seconds <= 3600):
        p.error("--clients must be 1-256 and --seconds 10-3600")
    names = {f.name for f in args.models.iterdir()} if args.models.is_dir() else set()
    if not {"digits-ae", "digits-rae", "digits-vae", "digits-gan"} <= names:
        p.error(f"{args.models} must hold the four digits models (python -m training.defaults --models DIR)")
    warmup = args.warmup if args.warmup is not None else min(30.0, args.seconds / 10)
    soak = Soak(args.models, args.clients, args.seconds, warmup, args.seed)
    soak.start()
    start = time.monotonic()
    try:
        asyncio.run(soak.run())
        exit_code = soak.process.wait(timeout=60)
    finally:
        if soak.process.poll() is None:
            soak.process.kill()
        soak.log.close()
    result = soak.report(exit_code, time.monotonic() - start)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    shutil.rmtree(soak.workdir, ignore_errors=True)
    ok = result["failed_valid_requests"] == 0 and result["server_errors_5xx"] == 0 and exit_code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
