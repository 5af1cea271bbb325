"""The decision framework of `ftkit plan` as pure functions: which training objective a goal and a dataset
call for, which adaptation method the hardware and the data size allow, and the hyperparameters that
follow from the data size. Every choice comes with the reason and where the knowledge comes from.

Nothing here reads files or runs the estimator: `ftkit.plan.recommend` does that and asks these rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Goal = Literal["chat", "format", "domain", "preference", "safety"]
GOALS: tuple[Goal, ...] = ("chat", "format", "domain", "preference", "safety")
DataKind = Literal["conversations", "pairs", "unpaired", "verifiable"]
DATA_KINDS: tuple[DataKind, ...] = ("conversations", "pairs", "unpaired", "verifiable")
Objective = Literal["sft", "sft+dpo", "dpo", "orpo", "kto", "grpo", "reward"]
Method = Literal["full", "lora", "dora", "qlora"]

# ftkit.data format names -> the kind of data they are (what an objective can train on).
FORMAT_KINDS: dict[str, DataKind] = {
    "messages": "conversations",
    "sharegpt": "conversations",
    "alpaca": "conversations",
    "completion": "conversations",
    "preference": "pairs",
    "kto": "unpaired",
    "prompt-only": "verifiable",
}

DEFAULT_DATA: dict[Goal, DataKind] = {
    "chat": "conversations",
    "format": "conversations",
    "domain": "conversations",
    "preference": "pairs",
    "safety": "pairs",
}

SOURCES = {
    "qlora": "Dettmers et al. 2023, QLoRA (arXiv:2305.14314): 4-bit NF4 base + LoRA matches 16-bit fine-tuning",
    "lora-forgets": "Biderman et al. 2024, LoRA Learns Less and Forgets Less (arXiv:2405.09673)",
    "dora": "Liu et al. 2024, DoRA (arXiv:2402.09353): better than LoRA at the same (low) rank",
    "lima": "Zhou et al. 2023, LIMA (arXiv:2305.11206): ~1k curated examples, several epochs, suffice for style",
    "dpo": "Rafailov et al. 2023, DPO (arXiv:2305.18290); Tunstall et al. 2023, Zephyr: SFT first, then DPO",
    "orpo": "Hong et al. 2024, ORPO (arXiv:2403.07691): SFT and preference in one stage, no reference model",
    "kto": "Ethayarajh et al. 2024, KTO (arXiv:2402.01306): unpaired desirable/undesirable labels",
    "grpo": "Shao et al. 2024, DeepSeekMath GRPO (arXiv:2402.03300): online RL from a checkable reward",
}


@dataclass(frozen=True)
class Choice:
    """One option the framework considered, in order of preference, with why."""

    value: str
    reason: str
    source: str | None = None


@dataclass
class Hyper:
    """Hyperparameters that follow from the data: engine-neutral names (the recommender maps them to keys)."""

    epochs: float
    learning_rate: float
    global_batch: int
    lora_rank: int | None = None
    beta: float | None = None  # DPO/ORPO/KTO strength
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def objectives(goal: Goal, data: DataKind) -> list[Choice]:
    """Training objectives for a goal and the data the user has, best first. Empty: the data cannot serve the goal."""
    if data == "verifiable":
        return [Choice("grpo", "prompts with a checkable answer: online RL (GRPO) optimises the reward directly, "
                       "no preference labels needed", SOURCES["grpo"])]  # fmt: skip
    if data == "unpaired":
        return [Choice("kto", "thumbs-up/down labels on single answers: KTO learns from unpaired feedback, "
                       "no chosen/rejected pairs needed", SOURCES["kto"])]  # fmt: skip
    if data == "pairs":
        if goal in ("preference", "safety"):
            return [
                Choice("sft+dpo", "chosen/rejected pairs: SFT on the chosen answers, then DPO (the reference model is "
                       "the SFT model with its adapter disabled, no second copy)", SOURCES["dpo"]),
                Choice("orpo", "one stage instead of two: ORPO folds the SFT loss into the preference loss and needs "
                       "no reference model (cheaper; best when the base is not yet tuned to the domain)",
                       SOURCES["orpo"]),
                Choice("reward", "a reward model (Bradley-Terry) on the pairs, to score or filter generations or "
                       "drive online RL later", SOURCES["dpo"]),
            ]  # fmt: skip
        return [Choice("sft", "pairs for a non-preference goal: train on the chosen answers only (SFT)")]
    if goal in ("preference", "safety"):
        return []  # conversations alone carry no preference signal
    return [Choice("sft", {
        "chat": "multi-turn conversations: supervised fine-tuning on the assistant turns",
        "format": "a target output format (JSON, a schema, a style): SFT on examples of it; format is a narrow, "
                  "low-rank change",
        "domain": "domain conversations: SFT on them teaches the vocabulary and facts",
    }[goal], SOURCES["lima"] if goal != "domain" else SOURCES["lora-forgets"])]  # fmt: skip


FULL_FT_MIN_ROWS = 50_000  # below this a full fine-tune mostly buys forgetting (Biderman et al. 2024)


def methods(goal: Goal, rows: int, objective: str) -> list[Choice]:
    """Adaptation methods worth running for this data, best first (the recommender keeps the first that fits)."""
    out: list[Choice] = []
    if objective in ("sft", "sft+dpo") and goal == "domain" and rows >= FULL_FT_MIN_ROWS:
        out.append(Choice("full", f"{rows:,} domain rows (≥ {FULL_FT_MIN_ROWS:,}): a full fine-tune learns more "
                          "new knowledge than LoRA at this size (it also forgets more: the forgetting check "
                          "measures it)", SOURCES["lora-forgets"]))  # fmt: skip
    out.append(Choice("lora", "bf16 LoRA on all linear layers: no quantization error and faster steps than QLoRA, "
                      "and it forgets less of the base than a full fine-tune", SOURCES["lora-forgets"]))  # fmt: skip
    if rows < 10_000 and objective in ("sft",):
        out.append(Choice("dora", "DoRA: a little better than LoRA at low rank on small data, at ~1.2-2× the step "
                          "time", SOURCES["dora"]))  # fmt: skip
    out.append(Choice("qlora", "QLoRA: the base in 4-bit NF4, about a quarter of LoRA's weight memory, near-equal "
                      "quality", SOURCES["qlora"]))  # fmt: skip
    return out


def hyperparameters(goal: Goal, rows: int, objective: str, method: str) -> Hyper:
    """Epochs, learning rate, global batch, LoRA rank and beta from the data size (rules of thumb, each stated)."""
    warnings: list[str] = []
    reasons: list[str] = []
    preference = objective in ("dpo", "sft+dpo", "orpo", "kto", "reward")
    if objective == "grpo":
        epochs, lr, batch = 1.0, 1e-6 if method == "full" else 5e-6, 16
        reasons.append("GRPO: one pass over the prompts; each step samples several completions per prompt; a "
                       "small learning rate keeps the policy near the base")  # fmt: skip
        if rows < 500:
            warnings.append(f"{rows} prompts is few for online RL: the reward curve will be noisy; aim for ≥ 1,000")
    elif preference:
        epochs = 2.0 if rows < 5_000 else 1.0
        lr = {"full": 5e-7, "qlora": 5e-6, "lora": 5e-6, "dora": 5e-6}[method] if objective != "orpo" else 8e-6
        batch = 16 if rows < 20_000 else 32
        reasons.append(f"{rows:,} pairs: {epochs:g} epoch(s); preference losses overfit fast, so one epoch once "
                       "there are thousands of pairs")  # fmt: skip
        if rows < 500:
            warnings.append(f"{rows} preference rows is few: expect noisy reward margins; ≥ 1,000 pairs is a common "
                            "floor (Zephyr used ~60k)")  # fmt: skip
    else:
        epochs = 3.0 if rows < 1_000 else 2.0 if rows < 10_000 else 1.0
        lr = 2e-5 if method == "full" else 2e-4 if rows < 50_000 else 1e-4
        batch = 16 if rows < 10_000 else 32 if rows < 100_000 else 64
        reasons.append(f"{rows:,} rows: {epochs:g} epoch(s) (small sets need several passes, LIMA-style; large ones "
                       "one, or the model memorises)")  # fmt: skip
        if rows < 200:
            warnings.append(f"{rows} rows is very few for fine-tuning: try few-shot prompting first, or collect "
                            "≥ 1,000 curated rows")  # fmt: skip
    rank = None
    if method != "full":
        rank = 8 if goal == "format" else 16 if rows < 10_000 else 32 if rows < 100_000 else 64
        why = "a format is a narrow change: a low rank suffices" if goal == "format" else "rank grows with the data"
        reasons.append(f"LoRA rank {rank} (alpha {2 * rank}): {why}")
    reasons.append(f"learning rate {lr:g}; global batch {batch} (micro-batch × accumulation × GPUs: keep it when "
                   "the GPU count changes)")  # fmt: skip
    steps = rows * epochs / batch
    if steps < 30:
        warnings.append(f"only ~{steps:.0f} optimizer steps at global batch {batch}: halve the batch or add data")
    beta = 0.1 if objective in ("dpo", "sft+dpo", "kto", "orpo") else None
    return Hyper(epochs, lr, batch, rank, beta, reasons, warnings)
