"""Ready-to-paste serving commands for a run or a model dir: vLLM, TGI, llama.cpp and Ollama.

`serve_target` reads what a run produced (merged model, adapter, GGUFs, sequence length, LoRA rank);
`serve_commands` is a pure function of that target.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftkit.errors import FtkitError

TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.4"  # pinned; bump deliberately


@dataclass
class ServeTarget:
    name: str
    merged_dir: Path | None = None
    base: str | None = None  # the base a LoRA adapter applies to
    adapter_dir: Path | None = None
    lora_rank: int | None = None
    max_len: int | None = None
    ggufs: list[Path] = field(default_factory=list)
    quantized: list[dict[str, Any]] = field(default_factory=list)  # {"dir", "method"} AWQ/GPTQ exports


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def serve_commands(t: ServeTarget, port: int = 8000) -> list[dict[str, str]]:
    """One entry per way to serve: {"server", "what", "command"}."""
    cmds: list[dict[str, str]] = []

    def add(server: str, what: str, command: str) -> None:
        cmds.append({"server": server, "what": what, "command": command})

    max_len = f" --max-model-len {t.max_len}" if t.max_len else ""
    docker = f"docker run --gpus all --shm-size 1g -p {port}:80"
    if t.merged_dir:
        add(
            "vllm",
            "merged model (bf16)",
            f"vllm serve {_q(t.merged_dir)} --served-model-name {t.name} --dtype bfloat16{max_len} --port {port}",
        )
    for q in t.quantized:
        add(
            "vllm",
            f"{q['method'].upper()} 4-bit (compressed-tensors)",
            f"vllm serve {_q(q['dir'])} --served-model-name {t.name}{max_len} --port {port}",
        )
    if t.base and t.adapter_dir:
        rank = f" --max-lora-rank {t.lora_rank}" if t.lora_rank else ""
        add(
            "vllm",
            "base + LoRA adapter (unmerged; several adapters can share a base)",
            f"vllm serve {_q(t.base)} --enable-lora --lora-modules {t.name}={_q(t.adapter_dir)}{rank}{max_len} "
            f"--port {port}",
        )
    if t.merged_dir:
        total = f" --max-total-tokens {t.max_len}" if t.max_len else ""
        mount = f"-v {_q(t.merged_dir.resolve())}:/model"
        add("tgi", "merged model", f"{docker} {mount} {TGI_IMAGE} --model-id /model{total}")
    if t.base and t.adapter_dir:
        local_base = Path(t.base).is_dir()  # a local base is mounted too; a hub id is downloaded by TGI
        base_mount = f" -v {_q(Path(t.base).resolve())}:/base" if local_base else ""
        add(
            "tgi",
            "base + LoRA adapter",
            f"{docker} -v {_q(t.adapter_dir.resolve())}:/adapter{base_mount} {TGI_IMAGE} "
            f"--model-id {'/base' if local_base else _q(t.base)} --lora-adapters {t.name}=/adapter",
        )
    for gguf in t.ggufs:
        ctx = f" -c {t.max_len}" if t.max_len else ""
        add("llama.cpp", f"GGUF {gguf.name}", f"llama-server -m {_q(gguf)}{ctx} --port {port}")
        add(
            "ollama",
            f"GGUF {gguf.name}",
            f"printf 'FROM %s\\n' {_q(gguf.resolve())} > Modelfile && "
            f"ollama create {t.name} -f Modelfile && ollama run {t.name}",
        )
    return cmds


def serve_commands_text(cmds: list[dict[str, str]]) -> str:
    """Copy-pastable text: per command a `# server: what` line (a shell comment), then the command on one line,
    never wrapped; blocks are separated by a blank line, so each block can be pasted into a shell as is."""
    return "\n\n".join(f"# {c['server']}: {c['what']}\n{c['command']}" for c in cmds)


def _lora_rank(adapter_dir: Path) -> int | None:
    cfg = adapter_dir / "adapter_config.json"
    if not cfg.is_file():
        return None
    data = json.loads(cfg.read_text())
    ranks = [int(data.get("r") or 0), *[int(v) for v in (data.get("rank_pattern") or {}).values()]]
    return max(ranks) or None


def serve_target(path: Path, stage: str | None = None) -> ServeTarget:
    """From a run dir (metrics.json) or a model dir (config.json, optionally with *.gguf beside it)."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        metrics = json.loads((path / "metrics.json").read_text())
        stages = metrics.get("stages") or {}
        if not stages:
            raise FtkitError.one("the run trained no stage", file=path / "metrics.json", fix="run the recipe first")
        name = stage or list(stages)[-1]
        info = stages.get(name)
        if info is None:
            raise FtkitError.one(f"no stage '{name}' in the run (stages: {', '.join(stages)})",
                                 file=path / "metrics.json", field="stages", fix="pass --stage")  # fmt: skip
        merged = Path(info["merged_dir"]) if info.get("merged_dir") else None
        adapter = Path(info["adapter_dir"]) if info.get("adapter_dir") else None
        exports = (metrics.get("export") or {}).get("artifacts") or []
        ggufs = [Path(e["path"]) for e in exports if e.get("format") == "gguf"]
        quantized = [{"dir": e["path"], "method": e["quant"]} for e in exports
                     if e.get("format") == "compressed-tensors"]  # fmt: skip
        seq = info.get("sequence_len")
        return ServeTarget(
            name=str(metrics.get("recipe", "model")),
            merged_dir=merged,
            base=info.get("base_model"),
            adapter_dir=adapter if adapter and (adapter / "adapter_config.json").is_file() else None,
            lora_rank=_lora_rank(adapter) if adapter else None,
            max_len=int(seq) if seq else None,
            ggufs=ggufs,
            quantized=quantized,
        )
    if (path / "config.json").is_file():
        return ServeTarget(name=path.name, merged_dir=path, ggufs=sorted(path.glob("*.gguf")))
    if (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return ServeTarget(name=path.name, base=base, adapter_dir=path, lora_rank=_lora_rank(path))
    raise FtkitError.one(f"{path} is not a run dir, a model dir or an adapter dir", file=path,
                         fix="pass runs/<recipe>/<run>/ or a dir with config.json or adapter_config.json")  # fmt: skip
