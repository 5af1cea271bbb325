"""`ftkit serve`: an OpenAI-compatible server for a run's merged model on this machine, via `transformers serve`.

`serve_plan` decides what to serve and how (it only reads the run's files); `run_server` is the I/O edge: it starts
`transformers serve` as a child process pinned to the model dir, waits until `/health` answers, and stops it cleanly
on Ctrl-C or SIGTERM. Nothing is downloaded: the child runs with the hub offline.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.errors import ExitCode, FtkitError
from ftkit.export.serve import serve_target

# What `transformers serve` imports (its `transformers[serving]` extra); `openai` supplies the response types.
SERVE_PACKAGES = ("fastapi", "uvicorn", "pydantic", "openai")
PIP_SPECS = {"openai": "'openai>=1.98,<3'"}  # transformers' floor; openai 3 needs httpx2, which the lock lacks
READY_TIMEOUT_S = 300.0  # loading an 8B model from a slow disk takes minutes
STOP_GRACE_S = 15.0  # after SIGTERM, then SIGKILL


@dataclass(frozen=True)
class ServePlan:
    """What `ftkit serve` starts: one local model dir, pinned, on host:port."""

    model_dir: Path  # absolute
    host: str
    port: int
    device: str = "auto"
    source: str = ""  # how the model was found, for the message ("stage 'dpo' of RUN_DIR")
    has_chat_template: bool = True

    @property
    def model_name(self) -> str:
        """The id requests send as "model": `transformers serve MODEL_DIR` accepts only that (or no "model")."""
        return str(self.model_dir)

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the server (a wildcard host is reached over loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def argv(self, python: str = sys.executable) -> list[str]:
        """The child's command line (the same as `transformers serve …`, without relying on PATH)."""
        return [
            python, "-m", "transformers.cli.transformers", "serve", self.model_name,
            "--device", self.device, "--host", self.host, "--port", str(self.port),
            "--no-trust-remote-code", "--log-level", "warning",
        ]  # fmt: skip

    def curl_example(self, prompt: str = "Hello! Who are you?", max_tokens: int = 128) -> str:
        body = {"model": self.model_name, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
        return (
            f"curl -s {self.url}/v1/chat/completions -H 'Content-Type: application/json' "
            f"-d {shlex.quote(json.dumps(body))}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir), "model_name": self.model_name, "url": self.url,
            "openai_base_url": f"{self.url}/v1", "host": self.host, "port": self.port, "device": self.device,
            "source": self.source, "has_chat_template": self.has_chat_template,
        }  # fmt: skip


@dataclass
class ServeOutcome:
    """How the server ended: stopped on request (`stopped_by` names the signal) or on its own (`returncode`)."""

    returncode: int | None
    stopped_by: str | None = None
    killed: bool = False  # it ignored SIGTERM for STOP_GRACE_S
    ready_seconds: float | None = None

    @property
    def clean(self) -> bool:
        """Stopped on request and shut down by itself (uvicorn re-raises SIGTERM after its graceful shutdown)."""
        return bool(self.stopped_by) and not self.killed and self.returncode in (0, -signal.SIGTERM)


def _merge_fix(run_dir: Path, stage: str) -> str:
    return (
        f"merge it: `ftkit export merge {run_dir} --stage {stage} --out MERGED_DIR`, then `ftkit serve MERGED_DIR`; "
        "or keep `export: {merge: true}` in recipe.yaml so that `ftkit recipe run` merges the last stage"
    )


def resolve_served_model(path: Path, stage: str | None = None) -> tuple[Path, str]:
    """The merged model dir to serve from a run dir (its last stage, or `stage`) or a model dir, and where it came
    from. An adapter alone, a run without a merge, or a dir without safetensors weights is an error with its fix."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        target = serve_target(path, stage=stage)  # checks the stage exists
        name = stage or list(json.loads((path / "metrics.json").read_text())["stages"])[-1]
        if target.merged_dir is None or not (target.merged_dir / "config.json").is_file():
            what = "has no merged model" if target.merged_dir is None else f"lost its merged model {target.merged_dir}"
            raise FtkitError.one(f"stage '{name}' of the run {what}", file=path / "metrics.json",
                                 field=f"stages.{name}.merged_dir", fix=_merge_fix(path, name))  # fmt: skip
        model_dir, source = target.merged_dir, f"stage '{name}' of {path}"
    elif (path / "config.json").is_file():
        model_dir, source = path, "model dir"
    elif (path / "adapter_config.json").is_file():
        raise FtkitError.one("an adapter alone cannot be served by `ftkit serve`", file=path / "adapter_config.json",
                             fix=f"merge it first: `ftkit export merge {path} --out MERGED_DIR`, then "
                             "`ftkit serve MERGED_DIR` (or `ftkit serve-cmd` for vLLM with LoRA)")  # fmt: skip
    else:
        fix = "pass runs/<recipe>/<run>/ or a merged model dir (config.json + safetensors)"
        raise FtkitError.one(f"{path} is not a run dir or a model dir", file=path, fix=fix)
    model_dir = model_dir.resolve()
    if not any(model_dir.glob("*.safetensors")):
        raise FtkitError.one("no safetensors weights in the model dir", file=model_dir,
                             fix="serve a merged model written by `ftkit export merge` (safetensors only)")  # fmt: skip
    if "@" in str(model_dir):
        raise FtkitError.one("the model dir's path contains '@', which `transformers serve` reads as a revision",
                             file=model_dir, fix="move the dir (or link it) to a path without '@'")  # fmt: skip
    return model_dir, source


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    cfg = model_dir / "tokenizer_config.json"
    return cfg.is_file() and bool(json.loads(cfg.read_text()).get("chat_template"))


def serve_plan(path: Path, *, host: str = "127.0.0.1", port: int = 8000, stage: str | None = None,
               device: str = "auto") -> ServePlan:  # fmt: skip
    """What `ftkit serve PATH` would start; raises FtkitError before anything starts."""
    if not 1 <= port <= 65535:
        raise FtkitError.one(f"port {port} is out of range", field="--port", fix="pass a port in 1..65535")
    model_dir, source = resolve_served_model(path, stage)
    return ServePlan(model_dir, host, port, device, source, _has_chat_template(model_dir))


def missing_serve_packages(find_spec: Callable[[str], Any] = importlib.util.find_spec) -> list[str]:
    return [name for name in SERVE_PACKAGES if find_spec(name) is None]


def check_serve_packages(find_spec: Callable[[str], Any] = importlib.util.find_spec) -> None:
    """`transformers serve` needs transformers[serving]; say which package is missing instead of a traceback."""
    missing = missing_serve_packages(find_spec)
    if missing:
        raise FtkitError.one(
            f"`transformers serve` needs {', '.join(missing)} (its `serving` extra), not installed here",
            fix=f"pip install {' '.join(PIP_SPECS.get(m, m) for m in missing)} into this environment (to keep it, "
            "add it to requirements.in and run `make lock`), or serve with vLLM/llama.cpp: `ftkit serve-cmd RUN_DIR`",
            code=ExitCode.ENVIRONMENT,
        )


def check_port_free(host: str, port: int) -> None:
    """Refuse early, with the fix, when something already listens on host:port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FtkitError.one(f"cannot resolve host '{host}': {exc}", field="--host",
                             fix="pass an address of this machine, e.g. 127.0.0.1") from exc  # fmt: skip
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        try:
            sock.bind(addr)
        except OSError as exc:
            raise FtkitError.one(f"cannot listen on {host}:{port}: {exc.strerror}", field="--port",
                                 fix="pass another --port, or stop what listens there") from exc  # fmt: skip


def child_env(base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The server's environment: the hub offline (the model is a local dir) and no update check over the network."""
    return {**base, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM if ftkit dies without stopping it (e.g. SIGKILL)."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _healthy(url: str) -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP(S)_PROXY
    try:
        with direct.open(f"{url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def run_server(
    plan: ServePlan,
    on_ready: Callable[[ServePlan, int, float], None],
    *,
    ready_timeout: float = READY_TIMEOUT_S,
    python: str = sys.executable,
) -> ServeOutcome:
    """Start the server, call `on_ready(plan, pid, seconds)` once /health answers, then wait until it ends.

    SIGINT and SIGTERM are turned into one SIGTERM to the server (uvicorn's graceful shutdown); the server runs in its
    own session so that a terminal's Ctrl-C reaches it only through us. Raises FtkitError (exit 4) if it exits or
    stays silent before it is ready.
    """
    proc = subprocess.Popen(
        plan.argv(python), env=child_env(), start_new_session=True, stdout=2,  # fd 2: our stdout is for the URL etc.
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )  # fmt: skip
    outcome = ServeOutcome(returncode=None)
    stop_at: list[float] = []

    def on_signal(signum: int, _frame: object) -> None:
        if not stop_at:
            stop_at.append(time.monotonic())
            outcome.stopped_by = signal.Signals(signum).name
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        started = time.monotonic()
        while not stop_at and proc.poll() is None and not _healthy(plan.url):
            if time.monotonic() - started > ready_timeout:
                raise FtkitError.one(f"the server did not answer {plan.url}/health within {ready_timeout:.0f} s",
                                     file=plan.model_dir, fix="see its log above; pass a larger --ready-timeout",
                                     code=ExitCode.ENGINE_FAILED)  # fmt: skip
            time.sleep(0.25)
        if proc.poll() is not None and not stop_at:
            raise FtkitError.one(f"the server exited with code {proc.returncode} before it was ready",
                                 file=plan.model_dir, fix="see its log above", code=ExitCode.ENGINE_FAILED)  # fmt: skip
        if not stop_at:
            outcome.ready_seconds = time.monotonic() - started
            on_ready(plan, proc.pid, outcome.ready_seconds)
        while proc.poll() is None:
            if stop_at and time.monotonic() - stop_at[0] > STOP_GRACE_S:
                proc.kill()
                outcome.killed = True
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.25)
        outcome.returncode = proc.returncode
        return outcome
    finally:
        if proc.poll() is None:  # an error above: do not leave the server behind
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
