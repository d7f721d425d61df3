"""The six scenarios of issue 7, run against imagegate, the limit and the peer side by side.

`Harness` owns the temp dir and every child process; `run_all` runs the chosen scenarios in
three phases (servers with 1 worker; the 100,000-entry cache; servers with 2 workers) and
returns the measured `Run`s plus notes. Every run is bounded by `BenchConfig.seconds`.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.assets import SIZES, make_png
from bench.gateway import MODEL, populate, request_body, start_gateway, write_config
from bench.load import LoadResult, burst, lua_script, run_wrk
from bench.loop_lag import lag_between, scrape_lag
from bench.peer import Litellm, PeerUnavailable, start_litellm, write_litellm_config
from bench.procs import Child, Procs, RssSampler, free_port, tree_cpu_seconds, wait_http
from bench.report import Run
from bench.upstream import LARGE_MARK

__all__ = ["BenchConfig", "Harness", "run_all"]

JSON = {"Content-Type": "application/json"}
GEN = "/v1/images/generations"


@dataclass(frozen=True)
class BenchConfig:
    seconds: float = 10.0  # each timed wrk run
    warmup: float = 2.0  # an untimed wrk run before each timed one
    latency_ms: float = 200.0  # the fake upstream's latency
    burst: int = 500  # scenario 4: identical misses at once
    entries_big: int = 100_000  # scenario 5
    entries_small: int = 1_000
    hit_conns: tuple[int, ...] = (1, 64)
    miss_conns: tuple[int, ...] = (1, 16)
    scenarios: frozenset[str] = frozenset("123456789")
    scale_workers: int = 2
    limit_uvloop: bool = True  # also run the limit on uvloop (informative)
    gateway_loop: str | None = None  # the gateway's [server] event_loop; None: its default


@dataclass
class Server:
    name: str  # "imagegate" | "limit" | "litellm" | "upstream"
    port: int
    workers: int
    children: list[Child]
    # case -> path (and body) on this server
    posts: dict[str, tuple[str, str]] = field(default_factory=dict)
    gets: dict[str, str] = field(default_factory=dict)
    metrics_token: str | None = None  # Bearer for /metrics once API keys exist

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 - loopback
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def _prompt(size: str, what: str) -> str:
    return f"bench {what} {size}" + (f" {LARGE_MARK}" if size == "large" else "")


class Harness:
    def __init__(self, cfg: BenchConfig, workdir: Path, peer: Litellm | None) -> None:
        self.cfg = cfg
        self.dir = workdir
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.procs = Procs(workdir / "logs")
        self.peer = peer
        self.runs: list[Run] = []
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}
        self.upstream: Server | None = None
        self.run_id = str(int(time.time()))
        self.log: Callable[[str], None] = lambda line: print(line, flush=True)

    # -- servers -----------------------------------------------------------------------
    def start_upstream(self) -> Server:
        port = free_port()
        child = self.procs.start(
            "upstream",
            [
                _python(),
                "-m",
                "bench.upstream",
                "--port",
                str(port),
                "--latency-ms",
                f"{self.cfg.latency_ms:g}",
            ],
            cwd=_repo(),
        )
        wait_http(f"http://127.0.0.1:{port}/_bench/stats", child=child, timeout=60)
        self.upstream = Server("upstream", port, 1, [child])
        return self.upstream

    @property
    def upstream_base(self) -> str:
        assert self.upstream is not None
        return self.upstream.url("/v1")

    def upstream_calls(self) -> int:
        assert self.upstream is not None
        _, _, body = http("GET", self.upstream.url("/_bench/stats"))
        return int(json.loads(body)["calls"])

    def start_gateway(
        self,
        name: str,
        data_dir: Path,
        workers: int,
        *,
        memory_mb: int | None = None,
        extra: str = "",
        metrics_token: str | None = None,
        backend: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Server:
        port = free_port()
        config = write_config(
            self.dir / f"{name}.toml",
            port=port,
            data_dir=data_dir,
            upstream_base_url=self.upstream_base,
            memory_mb=memory_mb,
            extra=extra,
            metrics_key=metrics_token,
            backend=backend,
            event_loop=self.cfg.gateway_loop,
        )
        child = start_gateway(self.procs, config, workers=workers, name=name, port=port, env=env)
        return Server("imagegate", port, workers, [child], metrics_token=metrics_token)

    def start_limit(
        self, bodies: Path, workers: int, *, uvloop: bool = False, upstream: bool = False
    ) -> Server:
        port = free_port()
        children = []
        name = "limit-uvloop" if uvloop else "limit"
        for i in range(workers):
            argv = [_python(), "-m", "bench.limit", "--port", str(port), "--dir", str(bodies)]
            if upstream:  # the mixed scenario: a miss kind calls the fake first
                argv += ["--upstream", self.upstream_base + "/images/generations"]
            if workers > 1:
                argv.append("--reuse-port")
            if uvloop:
                argv.append("--uvloop")
            children.append(self.procs.start(f"{name}-w{workers}-{i}", argv, cwd=_repo()))
            wait_http(f"http://127.0.0.1:{port}/healthz", child=children[-1], timeout=30)
        return Server(name, port, workers, children)

    def start_peer(self, workers: int) -> Server | None:
        if self.peer is None:
            return None
        port = free_port()
        config = write_litellm_config(
            self.dir / f"litellm-w{workers}.yaml",
            upstream_base_url=self.upstream_base,
            cache_dir=self.dir / "litellm-cache",
        )
        try:
            child = start_litellm(
                self.procs,
                self.peer,
                config,
                port=port,
                workers=workers,
                name=f"litellm-w{workers}",
            )
        except PeerUnavailable as exc:
            self.notes.append(f"LiteLLM with {workers} worker(s) skipped: {exc}"[:600])
            self.log(f"peer: SKIPPED ({exc})"[:400])
            return None
        return Server("litellm", port, workers, [child])

    def stop(self, *servers: Server | None) -> None:
        for server in servers:
            if server is None:
                continue
            for child in server.children:
                self.procs.stop(child)

    # -- priming -----------------------------------------------------------------------
    def prime_gateway(self, gw: Server) -> dict[str, bytes]:
        """Make the hit entries (one MISS each), check the provider, capture the exact hit
        bodies and blobs the limit will serve. Returns limit files: name -> bytes."""
        files: dict[str, bytes] = {}
        for size in SIZES:
            prompt = _prompt(size, "hit")
            body = request_body(prompt).encode()
            status, headers, _ = http("POST", gw.url(GEN), body, JSON)
            if status != 200:
                raise RuntimeError(f"priming {size}: HTTP {status}")
            provider = headers.get("X-Imagegate-Provider")
            if provider != "openai":
                raise RuntimeError(
                    f"misses are served by {provider!r}, not the 'openai' adapter: check the "
                    "[providers.openai] config (the bench needs misses to reach the fake)"
                )
            status, headers, hit = http("POST", gw.url(GEN), body, JSON)
            if headers.get("X-Cache") != "HIT":
                raise RuntimeError(f"second request for {size} was {headers.get('X-Cache')}")
            files[f"post-b64-{size}.json"] = hit
            gw.posts[f"b64-{size}"] = (GEN, body.decode())
            url_body = request_body(prompt, response_format="url")
            status, headers, url_hit = http("POST", gw.url(GEN), url_body.encode(), JSON)
            if headers.get("X-Cache") != "HIT":
                raise RuntimeError(f"url-mode request for {size} was {headers.get('X-Cache')}")
            files[f"post-url-{size}.json"] = url_hit
            gw.posts[f"url-{size}"] = (GEN, url_body)
            blob_path = urlsplit(json.loads(url_hit)["data"][0]["url"]).path
            status, headers, blob = http("GET", gw.url(blob_path))
            if status != 200 or len(blob) < 1000:
                raise RuntimeError(f"blob {blob_path}: HTTP {status}")
            files[f"blob-{blob_path.rsplit('/', 1)[1]}"] = blob
            gw.gets[f"blob-{size}"] = blob_path
            self.extra.setdefault("bytes", {})[size] = {
                "image": len(blob),
                "b64_json_response": len(hit),
                "url_response": len(url_hit),
            }
        return files

    def prime_peer(self, peer: Server) -> None:
        """Miss once per size, then repeat until a repeat no longer reaches the upstream
        (LiteLLM writes its cache after answering)."""
        for size in SIZES:
            body = request_body(_prompt(size, "hit")).encode()
            peer.posts[f"b64-{size}"] = (GEN, body.decode())
            for _ in range(40):
                before = self.upstream_calls()
                status, _, _ = http("POST", peer.url(GEN), body, JSON)
                if status != 200:
                    raise RuntimeError(f"LiteLLM priming {size}: HTTP {status}")
                if self.upstream_calls() == before:
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"LiteLLM never served {size} from its cache")

    # -- measuring ---------------------------------------------------------------------
    def measure(
        self,
        scenario: str,
        case: str,
        server: Server,
        *,
        connections: int,
        script: str,
        path: str,
        warmup: bool = True,
        **extra: Any,
    ) -> Run:
        url = server.url(path)
        if warmup and self.cfg.warmup > 0:
            run_wrk(url, script, connections=connections, seconds=self.cfg.warmup)
        lag = server.name == "imagegate"  # at 1 connection a lag is a stall, not a queue
        lag0 = scrape_lag(server.url(""), server.metrics_token) if lag else None
        before = self.upstream_calls()
        with self.accounting() as ours, RssSampler(server.pids) as rss:
            result = run_wrk(url, script, connections=connections, seconds=self.cfg.seconds)
        calls = self.upstream_calls() - before
        run = _to_run(
            scenario, case, server, result, rss, calls if server.name != "upstream" else None
        )
        run.foreign_cpu_cores = _foreign(rss, ours)
        run.extra["rss_start_mb"] = _mb(rss.start_per_process)
        if lag:
            run.extra["loop_lag"] = lag_between(
                lag0, scrape_lag(server.url(""), server.metrics_token)
            )
        run.extra.update(extra)
        self.runs.append(run)
        self.log(
            f"  [{scenario}] {case:<26} {server.name:<9} w{server.workers} c{connections:<3} "
            f"{run.rps:>9,.1f} req/s  p50 {run.p50_ms:8.2f} ms  p99 {run.p99_ms:8.2f} ms  "
            f"rss {run.rss_peak_mb or 0:6.0f} MB"
            + (f"  cpu {run.cpu_ms_per_req or 0:.3f} ms/req")
            + (f"  errors {run.errors}" if run.errors else "")
            + (
                f"  NOISE: other processes used {run.foreign_cpu_cores:.2f} cores"
                if (run.foreign_cpu_cores or 0) > 0.15
                else ""
            )
            + (f"  upstream calls {calls}" if calls and server.name != "upstream" else "")
            + _lag_note(run.extra.get("loop_lag"))
        )
        return run

    def hit_post(self, scenario: str, case: str, server: Server, key: str, conns: int) -> Run:
        path, body = server.posts[key]
        script = lua_script(method="POST", bodies=[body], headers=JSON)
        return self.measure(scenario, case, server, connections=conns, script=script, path=path)

    @contextmanager
    def accounting(self) -> Iterator[list[float]]:
        """CPU seconds used by everything the bench runs (children, wrk, itself)."""
        out: list[float] = []
        roots = [c.pid for c in self.procs.children]
        trees0 = sum(tree_cpu_seconds(roots).values())
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        yield out
        trees1 = sum(tree_cpu_seconds(roots).values())
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.append(
            (trees1 - trees0)
            + (self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime)
            + (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime)
        )

    # -- coalescing --------------------------------------------------------------------
    def quiet_upstream_calls(self, still: float = 1.0, limit: float = 60.0) -> int:
        """The fake's call count once it stopped moving for `still` seconds: a server that
        was behind (LiteLLM after scenario 3 queues for seconds) must not count as this
        run's calls."""
        deadline = time.monotonic() + limit
        calls = self.upstream_calls()
        while time.monotonic() < deadline:
            time.sleep(still)
            now = self.upstream_calls()
            if now == calls:
                return now
            calls = now
        return calls

    def coalesce(self, scenario: str, server: Server, tag: str) -> Run:
        prompt = f"bench coalesce {self.run_id} {tag}"
        body = request_body(prompt).encode()
        before = self.quiet_upstream_calls()
        with RssSampler(server.pids) as rss:
            result = asyncio.run(burst(server.url(GEN), body, self.cfg.burst))
        calls = self.upstream_calls() - before
        summary = result.summary()
        run = Run(
            scenario=scenario,
            case=f"{self.cfg.burst} identical misses",
            target=server.name,
            workers=server.workers,
            connections=self.cfg.burst,
            rps=round(result.ok / (result.wall_ms / 1000), 1) if result.wall_ms else 0.0,
            p50_ms=summary["p50_ms"],
            p99_ms=summary["p99_ms"],
            requests=result.sent,
            errors=result.sent - result.ok,
            max_ms=summary["max_ms"],
            rss_peak_mb=_mb(rss.peak_per_process),
            rss_total_mb=_mb(rss.peak_total),
            upstream_calls=calls,
            extra={"burst": summary},
        )
        self.runs.append(run)
        self.log(
            f"  [{scenario}] {run.case:<26} {server.name:<9} w{server.workers} "
            f"upstream calls {calls}  p50 {run.p50_ms:.1f} ms  p99 {run.p99_ms:.1f} ms  "
            f"max {run.max_ms:.1f} ms  x-cache {summary['x_cache']}  statuses {summary['statuses']}"
        )
        return run


def _to_run(
    scenario: str, case: str, server: Server, res: LoadResult, rss: RssSampler, calls: int | None
) -> Run:
    return Run(
        scenario=scenario,
        case=case,
        target=server.name,
        workers=server.workers,
        connections=res.connections,
        rps=res.rps,
        p50_ms=res.p50_ms,
        p99_ms=res.p99_ms,
        requests=res.requests,
        errors=res.errors,
        max_ms=res.max_ms,
        mb_per_s=res.mb_per_s,
        rss_peak_mb=_mb(rss.peak_per_process),
        rss_total_mb=_mb(rss.peak_total),
        upstream_calls=calls,
        cpu_ms_per_req=round(rss.cpu_seconds * 1000 / res.requests, 3) if res.requests else None,
    )


def _lag_note(lag: dict[str, Any] | None) -> str:
    if not lag or not lag.get("samples"):
        return ""
    return f"  loop lag p99 <= {lag['p99_le_ms']} ms, max <= {lag['max_le_ms']} ms"


def _foreign(rss: RssSampler, ours: list[float]) -> float | None:
    if not ours or rss.wall_seconds <= 0:
        return None
    return round(max(0.0, rss.system_busy - ours[0]) / rss.wall_seconds, 2)


def _mb(value: int) -> float | None:
    return round(value / 1e6, 1) if value else None


def _python() -> str:
    import sys

    return sys.executable


def _repo() -> Path:
    return Path(__file__).resolve().parent.parent


@contextmanager
def _phase(h: Harness, title: str) -> Iterator[None]:
    started = time.monotonic()
    h.log(f"== {title}")
    yield
    h.log(f"   ({time.monotonic() - started:.0f}s)")


def run_all(h: Harness) -> None:
    cfg, want = h.cfg, h.cfg.scenarios
    h.start_upstream()
    h.log(
        f"fake upstream on :{h.upstream.port if h.upstream else 0}, latency {cfg.latency_ms:g} ms"
    )
    if want & set("12346"):
        _phase_one(h)
    if "5" in want:
        _phase_many_entries(h)
    if "7" in want:
        from bench.store_hits import phase_store_hits  # they build on this module

        phase_store_hits(h)
    if "8" in want:
        from bench.mix_phase import phase_mix

        for workers in sorted({1, cfg.scale_workers}):
            phase_mix(h, workers)
    if "6" in want and cfg.scale_workers > 1:
        _phase_scaled(h, cfg.scale_workers)
    if "9" in want:
        from bench.shared_phase import phase_shared

        phase_shared(h)


def _phase_one(h: Harness) -> None:
    cfg, want = h.cfg, h.cfg.scenarios
    with _phase(h, "starting servers with 1 worker"):
        gw = h.start_gateway("imagegate-w1", h.dir / "data", 1)
        files = h.prime_gateway(gw)
        bodies = h.dir / "limit-bodies"
        bodies.mkdir(exist_ok=True)
        for name, data in files.items():
            (bodies / name).write_bytes(data)
        limit = h.start_limit(bodies, 1)
        limit_uv = h.start_limit(bodies, 1, uvloop=True) if cfg.limit_uvloop else None
        for bare in (limit, limit_uv):
            if bare is None:
                continue
            for key in gw.posts:
                bare.posts[key] = (f"/{key}", gw.posts[key][1])
            for key, path in gw.gets.items():
                bare.gets[key] = path
        peer = h.start_peer(1)
        if peer is not None:
            try:
                h.prime_peer(peer)
            except RuntimeError as exc:
                h.notes.append(f"LiteLLM skipped: {exc}")
                h.stop(peer)
                peer = None
    try:
        if "1" in want:
            with _phase(h, "scenario 1: hits, b64_json"):
                for size in SIZES:
                    for conns in cfg.hit_conns:
                        case = f"hit b64 {size}"
                        for server in (gw, limit, limit_uv, peer):
                            if server is not None:
                                h.hit_post("1", case, server, f"b64-{size}", conns)
        if "2" in want:
            with _phase(h, "scenario 2: hits, url mode, and the blob fetch"):
                for size in SIZES:
                    for server in (gw, limit, limit_uv):
                        if server is not None:
                            h.hit_post("2", f"hit url {size}", server, f"url-{size}", 64)
                    for server in (gw, limit, limit_uv):
                        if server is None:
                            continue
                        script = lua_script(method="GET")
                        h.measure(
                            "2",
                            f"GET blob {size}",
                            server,
                            connections=64,
                            script=script,
                            path=server.gets[f"blob-{size}"],
                        )
        if "3" in want:
            with _phase(h, f"scenario 3: miss overhead, upstream latency {cfg.latency_ms:g} ms"):
                _miss_overhead(h, gw, peer)
        if "4" in want:
            with _phase(h, f"scenario 4: coalescing, {cfg.burst} identical misses at once"):
                h.coalesce("4", gw, "w1")
                if peer is not None:
                    h.coalesce("4", peer, "peer-w1")
        if "6" in want:
            with _phase(h, "scenario 6: scaling, 1 worker"):
                for server in (gw, limit, peer):
                    if server is not None:
                        h.hit_post("6", "hit b64 small", server, "b64-small", 64)
    finally:
        h.stop(gw, limit, limit_uv, peer)


def _miss_overhead(h: Harness, gw: Server, peer: Server | None) -> None:
    assert h.upstream is not None
    direct = Server("upstream", h.upstream.port, 1, h.upstream.children)
    for conns in h.cfg.miss_conns:
        for server in (gw, direct, peer):
            if server is None:
                continue
            script = _miss_script(h, f"{server.name} c{conns}")
            # No warm-up run for misses (they would only fill the cache); one request first.
            http(
                "POST",
                server.url(GEN),
                request_body(f"bench warm {h.run_id} {conns}").encode(),
                JSON,
            )
            h.measure(
                "3",
                "miss b64 small",
                server,
                connections=conns,
                script=script,
                path=GEN,
                warmup=False,
            )


def _miss_script(h: Harness, tag: str) -> str:
    """A wrk script whose every request is a new prompt (a miss)."""
    prefix = json.dumps({"model": MODEL, "prompt": f"bench miss {h.run_id} {tag} "})[:-2]
    suffix = '", "size": "1024x1024", "quality": "low"}'  # prefix left the prompt open
    return lua_script(method="POST", unique_body=(prefix, suffix), headers=JSON)


def _phase_many_entries(h: Harness) -> None:
    cfg = h.cfg
    png = make_png(SIZES["small"])
    prompts = [f"bench many {i}" for i in range(cfg.entries_big)]
    rotation = [request_body(p) for p in prompts[: min(1000, cfg.entries_small)]]
    for label, count in (("small cache", cfg.entries_small), ("big cache", cfg.entries_big)):
        with _phase(h, f"scenario 5: {count:,} entries ({label})"):
            data = h.dir / f"data-{count}"
            port = free_port()
            config = write_config(
                h.dir / f"populate-{count}.toml",
                port=port,
                data_dir=data,
                upstream_base_url=h.upstream_base,
            )
            started = time.monotonic()
            written = populate(config, prompts[:count], png)
            took = time.monotonic() - started
            h.log(f"  populated {written:,} entries in {took:.1f}s")
            h.extra.setdefault("populate_seconds", {})[str(count)] = round(took, 1)
            # memory_mb = 0: every hit is looked up in the stores, which is what grows here
            # (with the default, the 1,000 rotating answers would be served from memory).
            gw = h.start_gateway(f"imagegate-{count}", data, 1, memory_mb=0)
            try:
                for body in (rotation[0], rotation[len(rotation) // 2], rotation[-1]):
                    _, headers, _ = http("POST", gw.url(GEN), body.encode(), JSON)
                    if headers.get("X-Cache") != "HIT":
                        raise RuntimeError(f"populated entry was {headers.get('X-Cache')}")
                script = lua_script(method="POST", bodies=rotation, headers=JSON)
                for conns in cfg.hit_conns:
                    h.measure(
                        "5",
                        f"hit b64 small, {count:,} entries, stores",
                        gw,
                        connections=conns,
                        script=script,
                        path=GEN,
                        entries=count,
                        rotation=len(rotation),
                    )
            finally:
                h.stop(gw)


def _phase_scaled(h: Harness, workers: int) -> None:
    with _phase(h, f"scenario 6: scaling, {workers} workers"):
        gw = h.start_gateway(f"imagegate-w{workers}", h.dir / "data", workers)
        limit = h.start_limit(h.dir / "limit-bodies", workers)
        peer = h.start_peer(workers)
    try:
        gw.posts["b64-small"] = (GEN, request_body(_prompt("small", "hit")))
        limit.posts["b64-small"] = ("/b64-small", gw.posts["b64-small"][1])
        _, headers, _ = http("POST", gw.url(GEN), gw.posts["b64-small"][1].encode(), JSON)
        if headers.get("X-Cache") != "HIT":
            raise RuntimeError(f"the {workers}-worker gateway missed its primed entry")
        if peer is not None:
            try:
                h.prime_peer(peer)
            except RuntimeError as exc:
                h.notes.append(f"LiteLLM w{workers} skipped: {exc}")
                h.stop(peer)
                peer = None
        for server in (gw, limit, peer):
            if server is not None:
                h.hit_post("6", "hit b64 small", server, "b64-small", 64)
        if "4" in h.cfg.scenarios or "6" in h.cfg.scenarios:
            h.coalesce("6", gw, f"w{workers}")
    finally:
        h.stop(gw, limit, peer)
