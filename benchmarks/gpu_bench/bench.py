"""The GPU bench's measuring core: carried wheels, environment, cases, model loading, the timed loops, TRL runs.

What each case measures: `gpu_bench.cli`'s docstring (`python benchmarks/gpu_bench --help`).
"""

import contextlib
import gc
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpu_bench.models import make_config

T_START = time.monotonic()
ROOT = Path(__file__).resolve().parents[2]
SFT_YAML = ROOT / "recipes/llama8b-qlora-sft/sft.axolotl.yaml"
DPO_YAML = ROOT / "recipes/llama8b-qlora-dpo/dpo.axolotl.yaml"
LORA_YAML = ROOT / "recipes/llama8b-lora-sft/sft.axolotl.yaml"
FULL_YAML = ROOT / "recipes/llama8b-full-fsdp/sft.axolotl.yaml"
DORA_YAML = ROOT / "recipes/qwen2.5-7b-dora-sft/sft.axolotl.yaml"
ORPO_YAML = ROOT / "recipes/llama8b-qlora-orpo/orpo.axolotl.yaml"
KTO_YAML = ROOT / "recipes/llama8b-qlora-kto/kto.axolotl.yaml"
REWARD_YAML = ROOT / "recipes/llama8b-reward-model/reward.axolotl.yaml"
GRPO_YAML = ROOT / "recipes/qwen2.5-1.5b-grpo/grpo.axolotl.yaml"
ALL_LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
TRL_KINDS = ("dpo", "orpo", "kto", "reward", "grpo")  # stages measured through TRL's trainers (what Axolotl drives)
GIB = 2**30
SCRIPT_VERSION = 3

TINY_SEQ_CAP = 128
CARRIED_PACKAGES = ("bitsandbytes", "trl", "peft")
DEFAULT_CASES = ("sft-recipe", "dpo-recipe", "lora-recipe", "sft-baseline", "full-recipe", "dora-recipe", "sft-eager",
                 "full-recipe-accum", "orpo-recipe", "kto-recipe", "reward-recipe")  # fmt: skip
ALL_CASES = (*DEFAULT_CASES, "dpo-baseline", "sft-chunked", "full-foreach", "grpo-recipe")
LOSS_CHUNKS = 8  # Axolotl's chunked_cross_entropy_num_chunks default
MIN_TIMED_STEPS = 2


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T_START:7.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------- carried wheels
def _importable(name: str) -> tuple[bool, str]:
    try:
        importlib.import_module(name)
        return True, ""
    except Exception as exc:  # a broken install raises more than ImportError
        return False, f"{type(exc).__name__}: {exc}"[:300]


def ensure_packages(wheels: Path) -> dict[str, Any]:
    """Install the carried wheels of packages that do not import; return what was done."""
    record: dict[str, Any] = {"wheels_dir": str(wheels), "actions": []}
    for name in CARRIED_PACKAGES:
        ok, why = _importable(name)
        if ok:
            continue
        found = sorted(wheels.glob(f"{name}-*.whl")) if wheels.is_dir() else []
        if not found:
            record["actions"].append({"package": name, "import_error": why, "result": f"no {name}-*.whl in {wheels}"})
            continue
        wheel = found[-1]
        log(f"{name} does not import ({why}); installing carried wheel {wheel.name}")
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        how = "pip install --no-deps --no-index"
        if proc.returncode != 0:
            # pip missing or site-packages read-only: unpack the wheel (these wheels need no install hooks).
            target = Path(tempfile.gettempdir()) / "gpu-carry-site"
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(target)
            if str(target) not in sys.path:
                sys.path.insert(0, str(target))
            how = f"unpacked onto sys.path at {target} (pip failed: {proc.stderr.strip()[-300:]})"
        importlib.invalidate_caches()
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]
        ok, why = _importable(name)
        record["actions"].append({"package": name, "wheel": wheel.name, "how": how, "imports_now": ok, "error": why})
    return record


# ------------------------------------------------------------------------------------------------------ environment
def package_versions() -> dict[str, str]:
    from importlib import metadata

    names = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "safetensors",
             "tokenizers", "numpy", "flash-attn", "flash_attn", "pyyaml")  # fmt: skip
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    if out.pop("flash_attn") != "absent":
        out["flash-attn"] = metadata.version("flash_attn")
    return out


def git_commit() -> str:
    """$GIT_COMMIT where the tree was copied without .git (the GPU machine), else ftkit's reading of the checkout."""
    from ftkit.envinfo import git_commit as checkout_commit

    return os.environ.get("GIT_COMMIT") or checkout_commit(ROOT)


def environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": package_versions(),
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device_used": device,
        "flash_attn_importable": importlib.util.find_spec("flash_attn") is not None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / GIB, 2)
        env["compute_capability"] = f"{props.major}.{props.minor}"
        env["cudnn"] = torch.backends.cudnn.version()
        with contextlib.suppress(Exception):
            q = "--query-gpu=driver_version,name,memory.total"
            smi = subprocess.run(["nvidia-smi", q, "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            env["nvidia_smi"] = smi.stdout.strip()
            env["driver"] = smi.stdout.strip().split(",")[0]
    else:
        env["gpu"] = None
        env["note"] = "no CUDA device: any figures from this run are CPU figures, not GPU figures"
    return env


COMMON_KEYS = ("sequence_len", "micro_batch_size", "gradient_accumulation_steps", "optimizer", "learning_rate",
               "max_grad_norm", "bf16", "tf32", "attn_implementation")  # fmt: skip
ADAPTER_KEYS = (*COMMON_KEYS, "load_in_4bit", "adapter", "lora_r", "lora_alpha", "lora_dropout",
                "gradient_checkpointing", "gradient_checkpointing_kwargs")  # fmt: skip
STAGE_KEYS = (*ADAPTER_KEYS, "lora_target_linear")
FULL_KEYS = (*COMMON_KEYS, "fsdp_config")


@dataclass
class Case:
    name: str
    kind: str  # "sft" | "dpo" | "orpo" | "kto" | "reward" | "grpo"
    description: str
    source: str
    seq_len: int
    micro_batch: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    learning_rate: float
    weight_decay: float
    max_grad_norm: float
    optimizer: str
    attn_implementation: str
    gradient_checkpointing_kwargs: dict[str, Any] | None  # None: what prepare_model_for_kbit_training does by default
    axolotl_dtype_casts: bool
    tf32: bool
    bnb_config_kwargs: dict[str, Any] | None = None  # None: the base stays bf16 (plain LoRA)
    beta: float | None = None
    dpo_impl: str | None = None
    separate_reference_model: bool = False
    yaml_attn_implementation: str | None = None
    arch: str = "llama-3.1-8b"
    method: str = "qlora"  # qlora | lora | dora | full
    grad_accum: int = 1  # micro-batches per optimizer step (1: every step is an optimizer step)
    trainer_extra: dict[str, Any] = field(default_factory=dict)  # stage options for the TRL config (KTO weights, ...)
    loss: str = "standard"  # standard: transformers' ForCausalLMLoss | chunked: see chunked_causal_lm_loss
    differs_from_recipe: dict[str, list[Any]] = field(default_factory=dict)


def build_cases(yamls: dict[str, dict[str, Any]], tiny: bool, dpo_impl: str) -> list[Case]:
    def seq(value: int) -> int:
        return min(int(value), TINY_SEQ_CAP) if tiny else int(value)

    def recipe(stage: dict[str, Any], name: str, kind: str, path: Path, arch: str = "llama-3.1-8b") -> Case:
        full = not stage.get("adapter")
        if not full and not (
            stage.get("lora_target_linear") or set(stage.get("lora_target_modules") or []) >= ALL_LINEAR
        ):
            raise SystemExit(f"{path}: LoRA does not target every linear layer; this benchmark targets all of them.")
        if full:
            # FSDP's activation_checkpointing wraps each decoder layer in torch's non-reentrant checkpoint.
            on = bool((stage.get("fsdp_config") or {}).get("activation_checkpointing"))
            stage = {**stage, "lora_r": 0, "lora_alpha": 0, "lora_dropout": 0.0, "load_in_4bit": False,
                     "gradient_checkpointing_kwargs": {"use_reentrant": False} if on else None}  # fmt: skip
        from ftkit.engines import get_engine
        from ftkit.engines.facts import method_of

        method = method_of(get_engine("axolotl").engine_facts(stage))  # ftkit's one reading: full/lora/qlora/dora
        return Case(
            arch=arch,
            method=method,
            name=name,
            kind=kind,
            description=f"{path.parent.name} hyperparameters from {path.name}; SDPA attention (flash-attn absent)",
            source=str(path.relative_to(ROOT)),
            seq_len=seq(stage["sequence_len"]),
            micro_batch=int(stage["micro_batch_size"]),
            lora_r=int(stage["lora_r"]),
            lora_alpha=int(stage["lora_alpha"]),
            lora_dropout=float(stage["lora_dropout"]),
            learning_rate=float(stage["learning_rate"]),
            weight_decay=float(stage.get("weight_decay", 0.0)),
            max_grad_norm=float(stage["max_grad_norm"]),
            optimizer=str(stage["optimizer"]),
            attn_implementation="sdpa",
            gradient_checkpointing_kwargs=None
            if stage["gradient_checkpointing_kwargs"] is None and full
            else dict(stage["gradient_checkpointing_kwargs"] or {}),
            axolotl_dtype_casts=bool(stage["load_in_4bit"]),
            tf32=bool(stage["tf32"]),
            bnb_config_kwargs=dict(stage.get("bnb_config_kwargs") or {}) if stage["load_in_4bit"] else None,
            beta=float(stage["orpo_alpha"] if kind == "orpo" else stage["rl_beta"])
            if kind in ("dpo", "orpo", "kto")
            else None,
            dpo_impl=dpo_impl if kind == "dpo" else "trl" if kind in TRL_KINDS else None,
            trainer_extra=trainer_extra(stage, kind),
            yaml_attn_implementation=stage["attn_implementation"],
        )

    def baseline(rec: Case, name: str, **extra: Any) -> Case:
        changes: dict[str, Any] = {
            "attn_implementation": "eager",
            "optimizer": "adamw_torch",
            "gradient_checkpointing_kwargs": None,
            "axolotl_dtype_casts": False,
            "tf32": False,
            **extra,
        }
        case = Case(**{**asdict(rec), **changes, "name": name})
        case.description = "plain transformers + PEFT baseline: same model, LoRA and tokens per step as " + rec.name
        case.differs_from_recipe = {k: [getattr(rec, k), v] for k, v in changes.items() if getattr(rec, k) != v}
        return case

    sft_rec = recipe(yamls["sft"], "sft-recipe", "sft", SFT_YAML)
    dpo_rec = recipe(yamls["dpo"], "dpo-recipe", "dpo", DPO_YAML)
    lora_rec = recipe(yamls["lora"], "lora-recipe", "sft", LORA_YAML)
    full_rec = recipe(yamls["full"], "full-recipe", "sft", FULL_YAML)
    full_rec.description = "llama8b-full-fsdp hyperparameters from sft.axolotl.yaml on ONE GPU, unsharded (the " \
        "recipe shards over 2+ GPUs with FSDP2): bf16 weights, gradients and fused AdamW states; SDPA"  # fmt: skip
    dora_rec = recipe(yamls["dora"], "dora-recipe", "sft", DORA_YAML, arch="qwen2.5-7b")
    orpo_rec = recipe(yamls["orpo"], "orpo-recipe", "orpo", ORPO_YAML)
    kto_rec = recipe(yamls["kto"], "kto-recipe", "kto", KTO_YAML)
    reward_rec = recipe(yamls["reward"], "reward-recipe", "reward", REWARD_YAML)
    sft_base = baseline(sft_rec, "sft-baseline")
    dpo_base = baseline(dpo_rec, "dpo-baseline", separate_reference_model=True, dpo_impl="direct")
    sft_eager = Case(**{**asdict(sft_rec), "name": "sft-eager", "attn_implementation": "eager"})
    sft_eager.description = "sft-recipe with eager attention only (isolates the materialised attention matrix)"
    sft_eager.differs_from_recipe = {"attn_implementation": ["sdpa", "eager"]}
    sft_chunked = Case(**{**asdict(sft_rec), "name": "sft-chunked", "loss": "chunked"})
    sft_chunked.description = (
        f"sft-recipe with a chunked cross-entropy ({LOSS_CHUNKS} chunks, each compiled), as Axolotl's "
        "chunked_cross_entropy: true computes it (isolates the logits term)"
    )
    sft_chunked.differs_from_recipe = {"loss": ["standard", "chunked"]}
    accum = int(yamls["full"]["gradient_accumulation_steps"])
    full_accum = Case(**{**asdict(full_rec), "name": "full-recipe-accum", "grad_accum": accum})
    full_accum.description = (
        f"full-recipe with the YAML's gradient accumulation ({accum}): the gradients of earlier micro-batches are "
        "alive during the next forward"
    )
    full_accum.differs_from_recipe = {"grad_accum": [1, accum]}
    grpo_rec = recipe(yamls["grpo"], "grpo-recipe", "grpo", GRPO_YAML, arch="qwen2.5-1.5b")
    grpo_rec.grad_accum = int(yamls["grpo"]["gradient_accumulation_steps"])  # its generation batch: micro x accum
    completion = int(grpo_rec.trainer_extra["max_completion_length"])
    grpo_rec.trainer_extra["max_completion_length"] = min(completion, grpo_rec.seq_len // 2) if tiny else completion
    grpo_rec.description = (
        "qwen2.5-1.5b-grpo hyperparameters from grpo.axolotl.yaml through TRL's GRPOTrainer: the policy samples "
        "micro_batch x gradient_accumulation_steps completions with generate() (no vLLM), every one forced to "
        "max_completion_length tokens, random rewards; one step = one optimizer step (its sampling and every "
        "micro-batch)"
    )
    full_foreach = Case(**{**asdict(full_rec), "name": "full-foreach", "optimizer": "adamw_torch"})
    full_foreach.description = (
        "full-recipe with torch.optim.AdamW's CUDA default (foreach, Axolotl's `optimizer: adamw_torch`) instead of "
        "the fused kernel: its step allocates sqrt(exp_avg_sq) for every parameter (the estimator's optimizer-step "
        "phase)"
    )
    full_foreach.differs_from_recipe = {"optimizer": [full_rec.optimizer, "adamw_torch"]}
    return [sft_rec, sft_base, dpo_rec, dpo_base, lora_rec, full_rec, dora_rec, sft_eager, full_accum, orpo_rec,
            kto_rec, reward_rec, sft_chunked, full_foreach, grpo_rec]  # fmt: skip


def trainer_extra(stage: dict[str, Any], kind: str) -> dict[str, Any]:
    """The stage's own TRL options, from the names Axolotl reads in the YAML."""
    if kind == "grpo":  # Axolotl's `trl:` section, with GRPOConfig's defaults where it is silent
        trl = stage.get("trl") or {}
        return {"num_generations": int(trl.get("num_generations") or 8),
                "max_completion_length": int(trl.get("max_completion_length") or 256),
                "beta": float(trl.get("beta") or 0.0), "temperature": float(trl.get("temperature") or 1.0)}  # fmt: skip
    if kind == "kto":
        return {"desirable_weight": float(stage.get("kto_desirable_weight", 1.0)),
                "undesirable_weight": float(stage.get("kto_undesirable_weight", 1.0))}  # fmt: skip
    if kind == "reward" and stage.get("center_rewards_coefficient") is not None:
        return {"center_rewards_coefficient": float(stage["center_rewards_coefficient"])}
    return {}


DIFFERENCE_NOTES = {
    "attn_implementation": "recipe: PyTorch SDPA (fused flash/mem-efficient kernels); baseline: eager (materialised "
    "attention matrix, fp32 softmax)",
    "optimizer": "recipe: bitsandbytes PagedAdamW8bit (8-bit states in CUDA managed memory); baseline: "
    "torch.optim.AdamW (fp32 states)",
    "gradient_checkpointing_kwargs": "recipe: {'use_reentrant': False} from the YAML; baseline: None, i.e. "
    "prepare_model_for_kbit_training's default, which passes {} and so leaves torch.utils.checkpoint's default "
    "(reentrant, with a warning) — see gradient_checkpointing_resolved",
    "axolotl_dtype_casts": "recipe: norms, embed_tokens and lm_head cast back to bf16 after "
    "prepare_model_for_kbit_training (as Axolotl does for QLoRA); baseline: they stay fp32 (PEFT's upcast)",
    "tf32": "recipe YAML tf32: true; baseline: torch default (off)",
    "separate_reference_model": "baseline DPO keeps a second 4-bit model as reference; recipe disables the adapter",
    "dpo_impl": "baseline DPO always uses the direct implementation",
    "loss": "sft-chunked: the loss upcasts and reduces the logits one compiled chunk at a time (Axolotl's "
    "chunked_cross_entropy); the recipe: transformers' ForCausalLMLoss over the whole fp32 logits",
}


def build_random_model(values: dict[str, Any], path: Path, device: str, n_params: int) -> dict[str, Any]:
    """Random bf16 weights for the architecture, saved once as safetensors; reused when the config matches."""
    import torch
    from transformers import AutoModelForCausalLM

    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
    marker = path / "bench_complete.json"
    if marker.is_file() and json.loads(marker.read_text()).get("config_sha") == digest:
        log(f"reusing random model in {path}")
        return {"dir": str(path), "reused": True, "config_sha": digest}
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    need = n_params * 2 * 1.1
    free = shutil.disk_usage(path).free
    if free < need:
        raise SystemExit(f"{path}: {free / GIB:.1f} GiB free, the bf16 model needs {need / GIB:.1f} GiB. "
                         "Fix: pass --model-dir on a disk with room (not under $OUT).")  # fmt: skip
    t0 = time.monotonic()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(make_config(values), dtype=torch.bfloat16)
    if device == "cuda":
        torch.cuda.synchronize()
    build_s = time.monotonic() - t0
    t1 = time.monotonic()
    model.save_pretrained(path, max_shard_size="5GB")
    save_s = time.monotonic() - t1
    del model
    free_memory(device)
    files = sorted(p.name for p in path.iterdir())
    size = sum(p.stat().st_size for p in path.iterdir())
    marker.write_text(json.dumps({"config_sha": digest}))
    log(f"random model built in {build_s:.0f} s, saved in {save_s:.0f} s: {size / GIB:.1f} GiB in {path}")
    return {"dir": str(path), "reused": False, "config_sha": digest, "build_seconds": round(build_s, 1),
            "save_seconds": round(save_s, 1), "size_gib": round(size / GIB, 2), "files": files}  # fmt: skip


def bnb_config(kw: dict[str, Any]) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=kw.get("bnb_4bit_quant_type", "nf4"),
        bnb_4bit_use_double_quant=bool(kw.get("bnb_4bit_use_double_quant", False)),
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_model(path: Path, attn: str, device: str, quant: Any | None, reward: bool = False) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {
        "dtype": torch.bfloat16,
        "attn_implementation": attn,
        "device_map": {"": 0} if device == "cuda" else {"": "cpu"},
    }
    if quant is not None:
        kwargs["quantization_config"] = quant
    if (
        reward
    ):  # a scalar head (`score`) on the decoder, as Axolotl loads `model_type: AutoModelForSequenceClassification`
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
        model.config.pad_token_id = model.config.vocab_size - 2  # the id tokenizer's <pad>
        return model
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def prepare_base(model: Any, case: Case) -> Any:
    """PEFT's k-bit preparation (freeze, upcast, checkpointing), then Axolotl's dtype fix-up for the recipe cases."""
    import torch
    from peft import prepare_model_for_kbit_training

    model.config.use_cache = False
    if case.method == "full":
        # Full fine-tune (what Axolotl does without an adapter): every weight trains, in bf16, checkpointed.
        model.requires_grad_(True)
        if case.gradient_checkpointing_kwargs is not None:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=case.gradient_checkpointing_kwargs)
        return model
    if case.bnb_config_kwargs is None:
        # bf16 LoRA (Axolotl's path for adapter: lora): no k-bit preparation, which would upcast every bf16
        # parameter to fp32; freeze, checkpoint with the YAML's kwargs, and let the inputs carry gradients.
        model.requires_grad_(False)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=case.gradient_checkpointing_kwargs or {})
        model.enable_input_require_grads()
        return model
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=case.gradient_checkpointing_kwargs
    )
    if not getattr(model, "is_loaded_in_4bit", False):
        # --tiny without 4-bit: PEFT enables checkpointing only for k-bit models; pass what it would have passed.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=case.gradient_checkpointing_kwargs or {})
    if case.axolotl_dtype_casts:
        for name, module in model.named_modules():
            if "norm" in name or name.endswith(("embed_tokens", "lm_head")):
                module.to(torch.bfloat16)
    return model


def resolved_checkpointing(model: Any) -> dict[str, Any]:
    for module in model.modules():
        func = getattr(module, "_gradient_checkpointing_func", None)
        if func is not None:
            keywords = dict(getattr(func, "keywords", {}) or {})
            reentrant = keywords.get("use_reentrant", "unset: torch.utils.checkpoint default (reentrant in torch 2.x)")
            return {"enabled": True, "checkpoint_kwargs": keywords, "use_reentrant": reentrant}
    return {"enabled": False}


def dtype_summary(model: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, param in model.named_parameters():
        for key in ("embed_tokens", "lm_head", "norm", "lora_A"):
            if key in name and key not in out:
                out[key] = str(param.dtype).replace("torch.", "")
    return out


def lora_config(case: Case) -> Any:
    from peft import LoraConfig

    reward = case.kind == "reward"
    return LoraConfig(r=case.lora_r, lora_alpha=case.lora_alpha, lora_dropout=case.lora_dropout,
                      target_modules=sorted(ALL_LINEAR) if reward else "all-linear", bias="none",
                      task_type="SEQ_CLS" if reward else "CAUSAL_LM", modules_to_save=["score"] if reward else None,
                      use_dora=case.method == "dora")  # fmt: skip


def make_optimizer(case: Case, params: list[Any], device: str) -> tuple[Any, str]:
    import torch

    if case.optimizer == "paged_adamw_8bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            if device == "cuda":
                raise RuntimeError("paged_adamw_8bit needs bitsandbytes: carry its wheel in --wheels")
            return torch.optim.AdamW(params, lr=case.learning_rate, weight_decay=case.weight_decay), (
                "torch.optim.AdamW (CPU check without bitsandbytes, NOT the recipe's optimizer)"
            )
        import bitsandbytes as bnb

        opt = bnb.optim.PagedAdamW8bit(params, lr=case.learning_rate, weight_decay=case.weight_decay)
        name = "bitsandbytes.optim.PagedAdamW8bit"
        return opt, name if device == "cuda" else name + " (on CPU bitsandbytes runs it unpaged)"
    if case.optimizer == "adamw_torch_fused":
        fused = device == "cuda"
        opt = torch.optim.AdamW(params, lr=case.learning_rate, weight_decay=case.weight_decay, fused=fused)
        return opt, "torch.optim.AdamW(fused=True)" if fused else "torch.optim.AdamW (CPU: not fused)"
    if case.optimizer in ("adamw_torch", "adamw"):
        return torch.optim.AdamW(params, lr=case.learning_rate, weight_decay=case.weight_decay), "torch.optim.AdamW"
    raise SystemExit(
        f"optimizer {case.optimizer!r} is not one this benchmark knows "
        "(paged_adamw_8bit, adamw_torch, adamw_torch_fused)"
    )


# ---------------------------------------------------------------------------------------------------------- helpers
def free_memory(device: str) -> None:
    if "bitsandbytes" in sys.modules:  # paged optimizer buffers stay listed in bitsandbytes' global page manager
        with contextlib.suppress(Exception):
            sys.modules["bitsandbytes"].functional.GlobalPageManager.get_instance().paged_tensors.clear()
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def synchronizer(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def memory_now(device: str) -> dict[str, float | None]:
    import torch

    if device != "cuda":
        return {"allocated_gib": None, "reserved_gib": None}
    return {"allocated_gib": round(torch.cuda.memory_allocated() / GIB, 3),
            "reserved_gib": round(torch.cuda.memory_reserved() / GIB, 3)}  # fmt: skip


def memory_peaks(device: str) -> dict[str, float | None]:
    import torch

    if device != "cuda":
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
        return {"peak_allocated_gib": None, "peak_reserved_gib": None, "device_used_gib": None,
                "cpu_process_peak_rss_gib": round(rss, 3)}  # fmt: skip
    free, total = torch.cuda.mem_get_info()
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3),
            "device_used_gib": round((total - free) / GIB, 3)}  # fmt: skip


def set_tf32(device: str, on: bool) -> None:
    import torch

    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


@contextlib.contextmanager
def record_warnings(sink: list[str]) -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message)[:300]}"
        if text not in sink and len(sink) < 12:
            sink.append(text)


def summarise(times: list[float], losses: list[float], tokens_per_step: int, warmup: int) -> dict[str, Any]:
    mean = statistics.fmean(times)
    p50 = statistics.median(times)
    return {
        "warmup_steps": warmup,
        "timed_steps": len(times),
        "step_seconds": [round(t, 4) for t in times],
        "step_seconds_mean": round(mean, 4),
        "step_seconds_p50": round(p50, 4),
        "tokens_per_step": tokens_per_step,
        "tokens_per_second": round(tokens_per_step / mean, 1),
        "tokens_per_second_p50": round(tokens_per_step / p50, 1),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "loss_note": "random weights: the loss only shows the step ran",
    }


class Deadline:
    """`seconds` from the start of the process when run as a script (imports count against a device lease), from
    now when `main` is called by an importer (a test suite that imported this module minutes earlier)."""

    def __init__(self, seconds: float) -> None:
        self.at = (T_START if __name__ == "__main__" else time.monotonic()) + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0


def timed_loop(step: Callable[[int], Any], warmup: int, steps: int, sync: Callable[[], None], deadline: Deadline,
               warn_sink: list[str]) -> tuple[list[float], list[float], bool]:  # fmt: skip
    times: list[float] = []
    losses: list[float] = []
    cut = False
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        ctx = record_warnings(warn_sink) if i == 0 else contextlib.nullcontext()
        with ctx:
            loss = step(i)
        sync()
        dt = time.perf_counter() - t0
        value = float(loss)
        kind = "warm-up" if i < warmup else "timed"
        log(f"  step {i + 1}/{warmup + steps} ({kind}): {dt:.3f} s, loss {value:.4f}")
        if i >= warmup:
            times.append(dt)
            losses.append(value)
            if len(times) >= MIN_TIMED_STEPS and len(times) < steps and deadline.left() < dt * 1.5:
                cut = True
                log(f"  deadline near: stopping after {len(times)} timed steps")
                break
    return times, losses, cut


# ------------------------------------------------------------------------------------------------------------- steps
def token_range(vocab: int) -> tuple[int, int]:
    """Random ids avoid the two top ids, used as pad/eos by the DPO tokenizer."""
    return 1, vocab - 2


def optimizer_step(loss: Any, params: list[Any], opt: Any, max_grad_norm: float) -> Any:
    """Backward, clip, step, clear: the end of every training step (as the HF Trainer does it)."""
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def chunked_causal_lm_loss(chunks: int) -> Callable[..., Any]:
    """A causal-LM loss with transformers' loss-function signature that upcasts and reduces the logits one
    sequence chunk at a time in a compiled function (what Axolotl's chunked_cross_entropy does), so only the bf16
    logits and their gradient are ever whole."""
    import torch
    import torch.nn.functional as F

    @torch.compile
    def chunk_sum(logits: Any, labels: Any) -> Any:
        return F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")

    def loss(logits: Any, labels: Any, vocab_size: int, num_items_in_batch: Any = None, **_: Any) -> Any:
        shifted = F.pad(labels, (0, 1), value=-100)[..., 1:].to(logits.device)
        pairs = zip(logits.chunk(chunks, dim=1), shifted.chunk(chunks, dim=1), strict=True)
        total = sum(chunk_sum(lg.reshape(-1, vocab_size), lb.reshape(-1)) for lg, lb in pairs)
        count = num_items_in_batch if num_items_in_batch is not None else (shifted != -100).sum()
        return total / count

    return loss


def sft_step_fn(model: Any, opt: Any, case: Case, device: str, vocab: int) -> Callable[[int], Any]:
    import torch

    if case.loss == "chunked":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.loss_function = chunked_causal_lm_loss(LOSS_CHUNKS)
    gen = torch.Generator(device=device).manual_seed(1234)
    lo, hi = token_range(vocab)
    params = [p for p in model.parameters() if p.requires_grad]

    micro = [0]

    def step(_: int) -> Any:
        ids = torch.randint(lo, hi, (case.micro_batch, case.seq_len), device=device, generator=gen)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        micro[0] += 1
        if micro[0] % case.grad_accum:  # accumulate: gradients stay alive into the next micro-batch
            (loss / case.grad_accum).backward()
        else:
            optimizer_step(loss / case.grad_accum, params, opt, case.max_grad_norm)
        return loss.detach()

    return step


def completion_logps(logits: Any, ids: Any, prompt_len: int) -> Any:
    """Sum of log-probs of the completion tokens of each row; one row at a time to bound the log-softmax memory."""
    import torch

    labels = ids[:, 1:]
    pairs = zip(logits[:, :-1], labels, strict=True)
    rows = [lg.log_softmax(-1).gather(-1, lb[:, None]).squeeze(-1) for lg, lb in pairs]
    per_token = torch.stack(rows)
    return per_token[:, prompt_len - 1 :].sum(-1)


def dpo_batch(gen: Any, case: Case, device: str, vocab: int) -> tuple[Any, int]:
    """micro_batch pairs: rows [chosen_0..chosen_{b-1}, rejected_0..rejected_{b-1}], each prompt + completion."""
    import torch

    lo, hi = token_range(vocab)
    mb, prompt_len = case.micro_batch, case.seq_len // 2
    comp_len = case.seq_len - prompt_len
    prompt = torch.randint(lo, hi, (mb, prompt_len), device=device, generator=gen)
    chosen = torch.randint(lo, hi, (mb, comp_len), device=device, generator=gen)
    rejected = torch.randint(lo, hi, (mb, comp_len), device=device, generator=gen)
    ids = torch.cat([torch.cat([prompt, chosen], 1), torch.cat([prompt, rejected], 1)], 0)
    return ids, prompt_len


def dpo_direct_step_fn(model: Any, ref_model: Any | None, opt: Any, case: Case, device: str,
                       vocab: int) -> Callable[[int], Any]:  # fmt: skip
    """TRL's DPO step written out: policy forward on chosen+rejected, reference forward without grad, sigmoid loss."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator(device=device).manual_seed(1234)
    params = [p for p in model.parameters() if p.requires_grad]
    beta = float(case.beta or 0.1)
    mb = case.micro_batch

    def step(_: int) -> Any:
        ids, prompt_len = dpo_batch(gen, case, device, vocab)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            logits = model(input_ids=ids, use_cache=False).logits
            logps = completion_logps(logits, ids, prompt_len)
            del logits
            with torch.no_grad():
                if ref_model is None:
                    with model.disable_adapter():
                        ref_logits = model(input_ids=ids, use_cache=False).logits
                else:
                    ref_logits = ref_model(input_ids=ids, use_cache=False).logits
                ref_logps = completion_logps(ref_logits, ids, prompt_len)
                del ref_logits
        logratios = (logps - ref_logps).float()
        loss = -F.logsigmoid(beta * (logratios[:mb] - logratios[mb:])).mean()
        return optimizer_step(loss, params, opt, case.max_grad_norm)

    return step


def disable_dropout(model: Any) -> None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


# --------------------------------------------------------------------------------------------------------------- TRL
def id_tokenizer(vocab: int) -> Any:
    """A word-level tokenizer where the word `t<i>` is token i: lets DPOTrainer tokenize text back to chosen ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    eos_id, pad_id = vocab - 1, vocab - 2
    table = {f"t{i}": i for i in range(vocab - 2)}
    table["<eos>"] = eos_id
    table["<pad>"] = pad_id
    core = Tokenizer(models.WordLevel(vocab=table, unk_token="t0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>", unk_token="t0")
    assert tok.eos_token_id == eos_id and tok.pad_token_id == pad_id, (tok.eos_token_id, tok.pad_token_id)
    return tok


def word_sampler(vocab: int) -> Callable[[int], str]:
    """n random words of id_tokenizer's vocabulary (each one token), from a fixed seed."""
    import random

    rng = random.Random(1234)
    lo, hi = token_range(vocab)
    return lambda n: " ".join(f"t{rng.randrange(lo, hi)}" for _ in range(n))


def dpo_rows(case: Case, vocab: int, n_rows: int) -> list[dict[str, str]]:
    """Text rows whose tokens fill sequence_len exactly: prompt + completion + the EOS that TRL appends."""
    words = word_sampler(vocab)
    prompt_len = case.seq_len // 2
    comp_words = case.seq_len - prompt_len - 1
    return [{"prompt": words(prompt_len), "chosen": " " + words(comp_words), "rejected": " " + words(comp_words)}
            for _ in range(n_rows)]  # fmt: skip


def stage_rows(case: Case, vocab: int, n_rows: int) -> list[dict[str, Any]]:
    """Rows in the stage's TRL format whose sequences fill sequence_len: pairs for DPO/ORPO, prompt + completion +
    label for KTO, chosen/rejected conversations for the reward model."""
    if case.kind == "grpo":  # prompts that leave max_completion_length tokens of seq_len for the completion
        words = word_sampler(vocab)
        n = case.seq_len - int(case.trainer_extra["max_completion_length"])
        return [{"prompt": words(n)} for _ in range(n_rows)]
    pairs = dpo_rows(case, vocab, n_rows)
    if case.kind == "kto":
        return [{"prompt": r["prompt"], "completion": r["chosen"], "label": i % 2 == 0} for i, r in enumerate(pairs)]
    if case.kind == "reward":
        return [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in pairs]
    return pairs


def trl_classes(kind: str) -> tuple[Any, Any]:
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if kind == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOConfig, ORPOTrainer
    if kind == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    if kind == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer
    from trl import RewardConfig, RewardTrainer

    return RewardConfig, RewardTrainer


TRL_REFERENCE = {
    "dpo": "TRL: same PEFT model with the adapter disabled (ref_model=None)",
    "kto": "TRL: same PEFT model with the adapter disabled (ref_model=None)",
    "orpo": "none: ORPO has no reference model",
    "reward": "none: a Bradley-Terry loss on the scalar scores of chosen and rejected",
    "grpo": "TRL: same PEFT model with the adapter disabled (KL to it with beta > 0)",
}


def random_rewards(completions: list[Any], **_: Any) -> list[float]:
    """GRPO needs a reward per completion; random ones give non-zero advantages (memory and speed do not care)."""
    import random

    return [random.random() for _ in completions]


def run_trl(model: Any, case: Case, device: str, vocab: int, warmup: int, steps: int, deadline: Deadline,
            result: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One preference or reward stage through TRL's own trainer (the HF Trainer loop Axolotl drives)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    config_cls, trainer_cls = trl_classes(case.kind)

    sync = synchronizer(device)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = 0.0
            self.all_times: list[float] = []
            self.losses: list[float] = []
            self.cut = False

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            dt = time.perf_counter() - self.t0
            self.all_times.append(dt)
            n = len(self.all_times)
            log(f"  step {n}/{warmup + steps} ({'warm-up' if n <= warmup else 'timed'}): {dt:.3f} s")
            timed = n - warmup
            if MIN_TIMED_STEPS <= timed < steps and deadline.left() < dt * 1.5:
                self.cut = True
                control.should_training_stop = True
                log(f"  deadline near: stopping after {timed} timed steps")

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    tok = id_tokenizer(vocab)
    grpo = case.kind == "grpo"
    accum = case.grad_accum if grpo else 1  # GRPO samples micro-batch x accumulation completions per optimizer step
    dataset = Dataset.from_list(stage_rows(case, vocab, (warmup + steps) * case.micro_batch * accum))
    on_cuda = device == "cuda"
    optim = case.optimizer if (on_cuda or importlib.util.find_spec("bitsandbytes")) else "adamw_torch"
    stage_args: dict[str, Any] = dict(case.trainer_extra)
    if case.kind in ("dpo", "orpo", "kto"):
        stage_args["beta"] = float(case.beta or 0.1)
    if case.kind == "dpo":
        stage_args["loss_type"] = "sigmoid"
    if grpo:  # every completion max_completion_length long: the recipe's worst case, and steady tokens per step
        stage_args["generation_kwargs"] = {"min_new_tokens": int(case.trainer_extra["max_completion_length"])}
    else:
        stage_args["max_length"] = case.seq_len
    args = config_cls(
        output_dir=tempfile.mkdtemp(prefix="dpo-bench-"),
        per_device_train_batch_size=case.micro_batch,
        gradient_accumulation_steps=accum,
        max_steps=warmup + steps,
        learning_rate=case.learning_rate,
        lr_scheduler_type="constant",
        weight_decay=case.weight_decay,
        max_grad_norm=case.max_grad_norm,
        optim=optim,
        bf16=True,
        tf32=case.tf32 if on_cuda else None,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs=case.gradient_checkpointing_kwargs,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=42,
        use_cpu=not on_cuda,
        **stage_args,
    )
    timer = StepTimer()
    extra: dict[str, Any] = {"ref_model": None} if case.kind in ("dpo", "kto") else {}
    if grpo:
        extra["reward_funcs"] = [random_rewards]
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tok,
                          peft_config=lora_config(case), callbacks=[timer], **extra)  # fmt: skip
    if not grpo:  # GRPO's collator passes the prompts through: its sequences are built by sampling
        check_trl_batch(trainer, case, result)
    result["trainable_params"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    result["param_dtypes"] = dtype_summary(trainer.model)
    targets = trainer.model.peft_config["default"].target_modules
    result["lora_target_modules"] = sorted({m.split(".")[-1] for m in targets})
    result["gradient_checkpointing_resolved"] = resolved_checkpointing(trainer.model)
    result["optimizer_used"] = f"HF Trainer optim={optim!r}"
    result["reference"] = TRL_REFERENCE[case.kind]
    result["dropout"] = (
        f"LoRA dropout {case.lora_dropout} (GRPOConfig.disable_dropout=False, its default)"
        if grpo
        else f"disabled by TRL ({config_cls.__name__}.disable_dropout=True, its default)"
    )
    result["memory_after_setup"] = memory_now(device)
    if on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    warn_sink: list[str] = []
    with record_warnings(warn_sink):
        trainer.train()
    sync()
    result.update(memory_peaks(device))
    result["warnings_during_training"] = warn_sink
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    result["optimizer_used"] += f" -> {type(inner).__module__}.{type(inner).__name__}"
    times = timer.all_times[warmup:]
    losses = timer.losses[warmup:] if len(timer.losses) >= len(timer.all_times) else timer.losses
    if not times or not losses:
        raise RuntimeError(f"TRL run produced {len(timer.all_times)} step times and {len(timer.losses)} losses")
    if grpo:  # one step: the sampling of micro-batch x accumulation completions and every micro-batch's pass
        result.update(summarise(times, losses, accum * case.micro_batch * case.seq_len, warmup))
        result["tokens_per_step_note"] = "micro-batch x accumulation x sequence_len (prompt + forced completion)"
    else:  # two sequences per row: chosen + rejected (DPO, ORPO, reward), or the row and its KL row (KTO)
        result.update(summarise(times, losses, 2 * case.micro_batch * case.seq_len, warmup))
        result["tokens_per_step_note"] = "2 x micro-batch x sequence_len: chosen + rejected, or (KTO) the row + KL row"
    result["steps_cut_short_by_deadline"] = timer.cut
    del trainer
    return result


def check_trl_batch(trainer: Any, case: Case, result: dict[str, Any]) -> None:
    """The trainer's collated batch fills sequence_len (DPO: exactly 2 x micro-batch rows of it)."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(case.micro_batch)])
    shapes = {k: list(v.shape) for k, v in batch.items() if "input_ids" in k and hasattr(v, "shape")}
    result["trl_batch_shapes"] = shapes
    if case.kind == "dpo":
        shape, expected = tuple(batch["input_ids"].shape), (2 * case.micro_batch, case.seq_len)
        if shape != expected:
            raise RuntimeError(f"DPOTrainer batch shape {shape}, expected {expected}: tokens per step would be wrong")
    widths = [s[-1] for s in shapes.values()]
    if not widths or max(widths) > case.seq_len + 1 or max(widths) < case.seq_len // 2:
        name = type(trainer).__name__
        raise RuntimeError(f"{name} batch {shapes}: sequences do not fill sequence_len {case.seq_len}")


def trl_usable(kind: str = "dpo") -> tuple[bool, str]:
    for name in ("trl", "datasets"):
        ok, why = _importable(name)
        if not ok:
            return False, f"{name} does not import ({why})"
    try:
        trl_classes(kind)
    except Exception as exc:
        return False, f"TRL's {kind} trainer does not import: {type(exc).__name__}: {exc}"[:400]
    return True, ""


# -------------------------------------------------------------------------------------------------------------- case
@dataclass
class Context:
    models: dict[str, tuple[Path, int]]  # architecture -> (random model dir, vocab size)
    device: str
    four_bit: bool  # False: --tiny without --tiny-4bit loads every case in bf16
    steps: int
    warmup: int
    deadline: Deadline
    sweep: tuple[tuple[int, int], ...] = ()  # (sequence_len, micro_batch) points measured after a recipe case
    tiny: bool = False


def run_case(case: Case, ctx: Context) -> dict[str, Any]:
    import torch

    device = ctx.device
    model_dir, vocab = ctx.models[case.arch]
    result: dict[str, Any] = {"name": case.name, "settings": asdict(case)}
    result["differences_explained"] = {k: DIFFERENCE_NOTES.get(k, "") for k in case.differs_from_recipe}
    free_memory(device)
    # Memory an earlier case left allocated (TRL trainers were seen to keep ~1 GiB each): it inflates this case's
    # peak, so run each case in its own process (one --cases name per run) when it is not 0.
    result["allocated_at_start_gib"] = memory_now(device)["allocated_gib"]
    set_tf32(device, case.tf32)
    quant = bnb_config(case.bnb_config_kwargs) if ctx.four_bit and case.bnb_config_kwargs is not None else None
    if quant is not None:
        result["quantization"] = quant.to_dict()
    else:
        result["quantization"] = "none: bf16 base" + (
            "" if case.bnb_config_kwargs is None else " (--tiny without 4-bit)"
        )
    t0 = time.monotonic()
    model = load_model(model_dir, case.attn_implementation, device, quant, reward=case.kind == "reward")
    ref_model = None
    if case.separate_reference_model:
        ref_model = load_model(model_dir, case.attn_implementation, device, quant).eval()
        ref_model.requires_grad_(False)
    result["load_seconds"] = round(time.monotonic() - t0, 1)
    result["memory_footprint_gib"] = round(model.get_memory_footprint() / GIB, 3)
    if device == "cuda":
        # from_pretrained alone (the estimator's loading peak: every weight, 4-bit ones with their quant_state
        # scales, which get_memory_footprint leaves out, + the matrix being quantized); prepare_base adds PEFT's
        # fp32 upcasts on top, in the figure below.
        result["peak_allocated_loading_only_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
    model = prepare_base(model, case)
    result["gradient_checkpointing_resolved"] = resolved_checkpointing(model)
    if device == "cuda":
        result["peak_allocated_during_load_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
    log(f"  loaded and prepared in {time.monotonic() - t0:.0f} s ({result['memory_footprint_gib']} GiB footprint)")

    impl = "direct"
    if case.kind in TRL_KINDS and case.dpo_impl in ("auto", "trl"):
        ok, why = trl_usable(case.kind)
        if ok:
            impl = "trl"
        elif case.dpo_impl == "trl":
            raise RuntimeError(f"--dpo-impl trl but {why}")
        else:
            result["trl_not_used_because"] = why
    if impl == "trl":
        result["implementation"] = f"trl.{trl_classes(case.kind)[1].__name__} (HF Trainer loop)"
        try:
            return run_trl(model, case, device, vocab, ctx.warmup, ctx.steps, ctx.deadline, result)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            if case.dpo_impl == "trl":
                raise
            result["trl_failed"] = f"{type(exc).__name__}: {exc}"[:600]
            result["trl_traceback_tail"] = traceback.format_exc()[-2000:]
        # Outside the except block, so the traceback no longer holds the TRL run's model and optimizer.
        log(f"  TRL DPOTrainer failed ({result['trl_failed'][:200]}); falling back to the direct DPO step")
        for key in [k for k in result if k not in ("name", "settings", "differences_explained", "quantization",
                                                    "load_seconds", "memory_footprint_gib", "trl_failed",
                                                    "trl_traceback_tail")]:  # fmt: skip
            del result[key]
        del model
        free_memory(device)
        model = prepare_base(load_model(model_dir, case.attn_implementation, device, quant), case)
        result["gradient_checkpointing_resolved"] = resolved_checkpointing(model)
    return run_plain(model, ref_model, case, ctx, result, vocab)


def run_plain(model: Any, ref_model: Any | None, case: Case, ctx: Context, result: dict[str, Any],
              vocab: int) -> dict[str, Any]:  # fmt: skip
    import torch
    from peft import get_peft_model

    device = ctx.device
    if case.method != "full":
        model = get_peft_model(model, lora_config(case))
    if case.kind == "dpo":
        disable_dropout(model)  # as TRL does by default
        result["dropout"] = "disabled (as TRL's DPOConfig.disable_dropout=True default)"
        if getattr(model, "is_loaded_in_4bit", False):
            for p in model.parameters():  # TRL keeps QLoRA adapter weights in bf16
                if p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
        result["implementation"] = "direct DPO step (policy forward on chosen+rejected, reference without grad, " \
            "sigmoid loss) in a plain PyTorch loop"  # fmt: skip
        result["reference"] = (
            "a second copy of the base model, loaded the same way" if ref_model is not None
            else "same model, adapter disabled"
        )  # fmt: skip
    else:
        what = "the full model (every weight trains)" if case.method == "full" else "a PEFT model"
        result["implementation"] = f"plain PyTorch loop over {what} (labels = input ids, transformers' loss)"
    model.train()
    if case.method != "full":
        targets = model.peft_config["default"].target_modules
        result["lora_target_modules"] = sorted({m.split(".")[-1] for m in targets})
    result["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result["param_dtypes"] = dtype_summary(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, opt_name = make_optimizer(case, params, device)
    result["optimizer_used"] = opt_name
    result["memory_after_setup"] = memory_now(device)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if case.kind == "sft":
        step = sft_step_fn(model, opt, case, device, vocab)
        tokens = case.micro_batch * case.seq_len
    else:
        step = dpo_direct_step_fn(model, ref_model, opt, case, device, vocab)
        tokens = 2 * case.micro_batch * case.seq_len
    warn_sink: list[str] = []
    times, losses, cut = timed_loop(step, ctx.warmup, ctx.steps, synchronizer(device), ctx.deadline, warn_sink)
    result.update(memory_peaks(device))
    result["warnings_first_step"] = warn_sink
    result.update(summarise(times, losses, tokens, ctx.warmup))
    result["steps_cut_short_by_deadline"] = cut
    if case.kind == "sft" and not case.differs_from_recipe and ctx.sweep:
        result["memory_sweep"] = memory_sweep(model, opt, case, ctx, vocab)
    del model, ref_model, opt, step, params
    return result


def memory_sweep(model: Any, opt: Any, case: Case, ctx: Context, vocab: int) -> list[dict[str, Any]]:
    """Peak memory of the same trained model and optimizer at other (sequence_len, micro_batch) points.

    Two steps per point after emptying the cache and resetting the peak counters, so each peak is that shape's
    own (the optimizer states exist already, as in any step after the first). Reference points for the estimator's
    slope with tokens; not a speed measurement.
    """
    from dataclasses import replace

    import torch

    device = ctx.device
    sync = synchronizer(device)
    out: list[dict[str, Any]] = []
    for seq, mb in ctx.sweep:
        seq = min(seq, TINY_SEQ_CAP) if ctx.tiny else seq
        if (seq, mb) == (case.seq_len, case.micro_batch) or any(
            (r["seq_len"], r["micro_batch"]) == (seq, mb) for r in out
        ):
            continue
        row: dict[str, Any] = {"seq_len": seq, "micro_batch": mb, "tokens_per_step": seq * mb}
        if ctx.deadline.left() < 45:
            row["skipped"] = "deadline too near"
            out.append(row)
            continue
        gc.collect()
        if device == "cuda":
            sync()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        step = sft_step_fn(model, opt, replace(case, seq_len=seq, micro_batch=mb), device, vocab)
        try:
            times = []
            for _ in range(2):
                sync()
                t0 = time.perf_counter()
                step(0)
                sync()
                times.append(round(time.perf_counter() - t0, 4))
            row.update(memory_peaks(device))
            row["step_seconds"] = times
        except torch.OutOfMemoryError as exc:
            row["error"] = f"CUDA out of memory: {exc}"[:300]
        del step
        shown = {k: row.get(k) for k in ("peak_allocated_gib", "peak_reserved_gib", "step_seconds", "error")}
        log(f"  sweep seq {seq} x mb {mb}: {json.dumps(shown)}")
        out.append(row)
    return out
