"""Known training failures as data: the log lines that show each one, the fix (in the order to try),
and where the knowledge comes from. Matched by `triage.classify_log`.

Key names are given for both engines where they differ (Axolotl `micro_batch_size`, TRL
`trainer.per_device_train_batch_size`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ftkit.doctor.findings import Severity


@dataclass(frozen=True)
class LogPattern:
    id: str
    title: str
    regex: re.Pattern[str]
    fix: tuple[str, ...]
    source: str
    severity: Severity = "error"


def _re(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE | re.MULTILINE)


OOM_KNOBS = (
    "gradient checkpointing on (Axolotl gradient_checkpointing: true, TRL trainer.gradient_checkpointing: true): "
    "activations are recomputed, about a third slower, far less memory",
    "a smaller micro-batch (Axolotl micro_batch_size, TRL trainer.per_device_train_batch_size), with "
    "gradient accumulation raised to keep the global batch",
    "a shorter sequence length (Axolotl sequence_len, TRL trainer.max_length); see the rows' token lengths with "
    "`ftkit data validate FILE --tokenizer MODEL --max-len N`",
    "an 8-bit optimizer (optimizer/optim: paged_adamw_8bit): optimizer states in 8 bits, paged out on spikes",
    "QLoRA: the frozen base in 4-bit NF4 (load_in_4bit: true, adapter: qlora / model.load_in_4bit: true)",
    "before the next run: `ftkit estimate --recipe NAME --micro-batch 1 --seq-len N` shows which term needs the "
    "memory and which GPUs fit",
)

PATTERNS: tuple[LogPattern, ...] = (
    LogPattern(
        "cuda-oom", "CUDA out of memory",
        _re(r"CUDA out of memory", r"torch\.(?:cuda\.)?OutOfMemoryError", r"CUBLAS_STATUS_ALLOC_FAILED",
            r"cudaErrorMemoryAllocation"),
        OOM_KNOBS, "https://huggingface.co/docs/transformers/perf_train_gpu_one",
    ),
    LogPattern(
        "nan-loss", "the loss (or gradient norm) became NaN or inf",
        _re(r"""['"]?(?:loss|train_loss|grad_norm|eval_loss)['"]?\s*[:=]\s*['"]?[-+]?(?:nan|inf)\b""",
            r"loss is nan", r"detected (?:nan|inf) (?:in|loss)"),
        ("fp16 overflows: use bf16 on Ampere or newer (bf16: true, fp16: false), fp32 on older GPUs and on CPU",
         "a lower learning rate (÷ 3 to ÷ 10) with a warm-up (warmup_ratio 0.03-0.1)",
         "clip gradients: max_grad_norm: 1.0",
         "bad rows (empty answers, rows whose labels are all masked, extreme lengths): `ftkit data validate FILE "
         "--schema STAGE.schema.json --tokenizer MODEL --max-len N`"),
        "https://huggingface.co/docs/transformers/perf_train_gpu_one#mixed-precision",
    ),
    LogPattern(
        "chat-template", "the chat template does not fit the data or the trainer",
        _re(r"not training-compatible", r"chat_template is not set", r"Conversation roles must alternate",
            r"No chat template found on tokenizer", r"jinja2\.exceptions\.TemplateError",
            r"EOS token '.*' not found in chat_template"),
        ("TRL assistant_only_loss needs a template with {% generation %} markers: use one that has them, or "
         "train on completions instead",
         "set the template that matches the model's special tokens (Axolotl chat_template: tokenizer_default, "
         "or the named one, e.g. llama3 for Llama 3)",
         "rows must alternate user/assistant and end with an assistant turn: `ftkit data validate FILE`"),
        "https://huggingface.co/docs/trl/sft_trainer",
    ),
    LogPattern(
        "pad-is-eos", "pad token = EOS: the model may never learn to stop",
        _re(r"Setting `?pad_token_id`? to `?eos_token_id`?",
            r"pad_token(?:_id)?`?\s*(?:==?|(?:is )?(?:the )?same as|set to)\s*(?:the |tokenizer\.)?`?eos_token",
            r"using (?:the )?eos_token as (?:the )?pad"),
        ("use a distinct pad token (Axolotl special_tokens.pad_token, TRL model.pad_token): e.g. "
         "<|finetune_right_pad_id|> for Llama 3, <|endoftext|> for SmolLM2",
         "or make sure the EOS after each assistant turn is trained (Axolotl train_on_eos: turn)"),
        "https://github.com/huggingface/trl/pull/1414", "warning",
    ),
    LogPattern(
        "flash-attn-missing", "flash-attn is missing or cannot load",
        _re(r"FlashAttention\d? has been toggled on, but it cannot be used", r"No module named '?flash_attn",
            r"You do not have `flash_attn` installed", r"flash_attn_2_cuda.*undefined symbol"),
        ("attn_implementation: sdpa (PyTorch's attention, no flash-attn; Axolotl sample packing then pads instead)",
         "or install the flash-attn wheel built for this torch and CUDA, or run the recipe's container "
         "(`ftkit doctor` checks the combination)"),
        "https://huggingface.co/docs/transformers/attention_interface",
    ),
    LogPattern(
        "gated-model", "the model is gated or the Hub token is missing (401/403)",
        _re(r"GatedRepoError", r"Cannot access gated repo", r"is restricted and you are not in the authorized list",
            r"\b401 Client Error", r"\b403 Client Error.*huggingface", r"Invalid user token"),
        ("accept the model's licence on its Hub page, as the user whose token the run uses",
         "`huggingface-cli login`, or export HF_TOKEN (read scope) in the run's environment: never in a config "
         "file or an image",
         "or train from a local copy you may use (base_model: /path/to/model)"),
        "https://huggingface.co/docs/hub/models-gated",
    ),
    LogPattern(
        "disk-full", "the disk is full",
        _re(r"No space left on device", r"\[Errno 28\]", r"Disk quota exceeded", r"Not enough disk space"),
        ("free space, or move HF_HOME (model and dataset cache) and --runs-dir to a bigger disk",
         "keep fewer checkpoints (save_total_limit; Axolotl saves_per_epoch)",
         "see what takes it: df -h; du -sh ~/.cache/huggingface runs/"),
        "https://huggingface.co/docs/huggingface_hub/guides/manage-cache",
    ),
    LogPattern(
        "killed", "the process was killed (SIGKILL; on Linux usually the out-of-memory killer: host RAM)",
        _re(r"^\s*Killed\s*$", r"\bsignal 9\b", r"\bSIGKILL\b", r"exit(?:code| code)\s*[:=]?\s*-9\b",
            r"Out of memory: Killed process"),
        ("confirm it: dmesg -T | grep -i -E 'killed process|out of memory' (or the container's OOMKilled state)",
         "use less host RAM: fewer preprocessing/dataloader workers (Axolotl dataset_processes, "
         "dataloader_num_workers), a smaller micro-batch on CPU, shorter sequences",
         "a machine (or container memory limit) with more RAM, or swap"),
        "https://www.kernel.org/doc/gorman/html/understand/understand016.html",
    ),
    LogPattern(
        "bitsandbytes-no-gpu", "bitsandbytes was loaded without GPU support",
        _re(r"bitsandbytes was compiled without GPU support", r"CUDA Setup failed despite GPU being available"),
        ("pip install --force-reinstall bitsandbytes (wheels ≥ 0.45 ship the CUDA libraries); `ftkit doctor` "
         "lists the ones installed",),
        "https://github.com/bitsandbytes-foundation/bitsandbytes/issues/1056",
    ),
)  # fmt: skip

KILLED_EXIT_CODES = (-9, 137)  # SIGKILL as os.waitstatus_to_exitcode reports it, and as a shell does
INTERRUPTED_EXIT_CODE = 6  # ftkit.errors.ExitCode.INTERRUPTED: SIGTERM, a checkpoint saved, resumable

# Not a failure: a stop on SIGTERM (spot/preemptible reclaim, SageMaker stop, `docker stop`, Ctrl-C via the runner).
INTERRUPTED = LogPattern(
    "interrupted",
    "the run was stopped by SIGTERM and saved a checkpoint: it can be resumed, not restarted",
    _re(r"^ftkit: stopped at step \d+ on SIG\w+", r"^ftkit: checkpoint-\d+ saved in .*; stopping"),
    (
        "resume it: ftkit recipe run --resume RUN_DIR (the run's own recipe, profile and --set values; finished "
        "stages are skipped, the stopped one continues from its checkpoint, the history before it is kept)",
        "on spot/preemptible machines keep checkpoints on a volume that survives the instance "
        "(SageMaker: /opt/ml/checkpoints; RunPod: /workspace) and save often enough (saves_per_epoch / save_steps)",
    ),
    "README.md (ftkit recipe run: interrupted runs resume)",
    severity="info",
)
