"""Pydantic schemas of `recipe.yaml` and `expected-metrics.yaml` (validated at load time)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ContainerRef(Strict):
    image: str = Field(description="Image repository, e.g. ghcr.io/finetune-recipes/axolotl")
    tag: str
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")


class Hardware(Strict):
    gpus: int = Field(ge=1, description="GPUs per node the full profile is written for")
    nodes: int = Field(default=1, ge=1, description="Nodes (machines) of `gpus` GPUs each the full profile needs")
    min_vram_gb: float = Field(gt=0, description="Smallest GPU memory per device the full profile fits")
    recommended: list[str] = Field(default_factory=list)


class Stage(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    config: str = Field(description="Engine config file, relative to the recipe folder")
    schema_file: str = Field(alias="schema", description="JSON Schema of one dataset row")
    sample: str = Field(description="Sample rows (JSONL) that obey the schema; the smoke profile trains on them")
    init_from: str | None = Field(
        default=None, description="An earlier stage whose adapter, merged into the base, this stage starts from"
    )


GgufQuant = Literal["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_0", "q3_k_m", "q2_k"]


class EvalPlan(Strict):
    """`ftkit eval` at the end of a run: held-out perplexity, generation check, forgetting, lm-eval tasks."""

    heldout: str | None = Field(
        default=None,
        description="held-out rows of the last stage's format (JSONL, relative to the recipe folder), never trained "
        "on: perplexity (and the chosen-rejected margin for pairs); the pre-flight checks they do not leak",
    )
    general_prompts: str | None = Field(
        default="builtin:mt-bench",
        description="general prompts for the forgetting check (builtin:mt-bench, a JSONL path, or null to skip)",
    )
    forgetting_threshold: float = Field(default=0.05, gt=0, lt=1, description="flag a general-text drop above this")
    max_rows: int = Field(default=200, ge=1, description="held-out rows scored at most")
    max_new_tokens: int = Field(default=128, ge=1, description="tokens per answer in the generation check")
    lm_eval_tasks: list[str] = Field(default_factory=list, description="lm-evaluation-harness tasks (need datasets)")
    gate: bool = Field(default=True, description="fail the run (exit 1) when an evaluation check fails")


class Export(Strict):
    merge: bool = Field(
        default=True,
        description="write the final model: the adapter merged into its base; a full "
        "fine-tune's trained weights re-saved in `dtype` without the trainer's state",
    )
    dtype: Literal["bfloat16", "float16", "float32"] | None = Field(
        default=None,
        description="the final model's dtype (default: bfloat16; float32 for a reward model's adapter, whose small "
        "deltas bf16 rounds away)",
    )
    verify: bool = Field(
        default=True,
        description="compare the final model's logits with base + adapter (a full "
        "fine-tune: with the trained checkpoint)",
    )
    max_shard_size: str = Field(default="5GB", description="safetensors shard size of the merged model")
    gguf: list[GgufQuant] = Field(default_factory=list, description="GGUF files to write (K-quants need llama.cpp)")
    quantize: list[Literal["awq", "gptq"]] = Field(
        default_factory=list, description="4-bit W4A16 exports for vLLM via llm-compressor (GPU)"
    )
    calibration: str | None = Field(
        default=None, description="calibration rows for AWQ/GPTQ (default: the last stage's dataset)"
    )
    eval: EvalPlan | None = None

    @model_validator(mode="after")
    def _exports_need_a_merge(self) -> Export:
        if not self.merge and (self.gguf or self.quantize):
            raise ValueError("gguf/quantize exports start from the final (merged) model: set merge: true")
        return self


PiiEntity = Literal[
    "EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "URL", "SECRET", "PERSON", "ADDRESS"
]  # ftkit.pii.findings.ENTITIES (a test keeps the two equal)


class PiiPolicy(Strict):
    """The PII gate of the pre-flight: every stage's local dataset is scanned before training."""

    max_rows: dict[PiiEntity, int | None] = Field(
        default_factory=dict,
        description="Rows that may carry each entity before the run refuses (SECRET defaults to 0; null = no limit)",
    )
    fields: list[str] | None = Field(
        default=None, description="Dotted paths of the text fields to scan (default: the row format's text fields)"
    )
    ner: str = Field(
        default="off",
        description="PERSON/ADDRESS via presidio + spaCy: off, auto (a model if installed) or a model name/path",
    )

    @field_validator("max_rows")
    @classmethod
    def _non_negative(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        bad = [k for k, v in value.items() if v is not None and v < 0]
        if bad:
            raise ValueError(f"max_rows must be 0 or more (or null for no limit): {bad}")
        return value


class Profile(Strict):
    description: str | None = None
    base_model: str | None = Field(
        default=None, description="Replaces every stage's base model: a hub id, a local dir or a built-in name"
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Engine-config keys (dotted paths allowed) set for every stage"
    )
    stages: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Engine-config keys set for one stage, by stage name"
    )
    export: dict[str, Any] = Field(
        default_factory=dict, description="Keys of the recipe's export section replaced in this profile"
    )
    processes: int | None = Field(
        default=None,
        ge=1,
        description="Training processes per stage (one per GPU). Default: the machine's GPUs (1 on CPU). A smoke "
        "profile of a multi-GPU recipe sets 2: two CPU processes on the gloo backend exercise the distributed path",
    )
    nodes: int | None = Field(
        default=None,
        ge=1,
        description="Nodes the profile is written for (default: the recipe's hardware.nodes). A run on fewer or more "
        "nodes (`--nodes`) keeps the global batch only if micro batch or accumulation change with it",
    )


class Recipe(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str
    base_model: str
    license: str | None = Field(default=None, description="The base model's licence id on the Hub (model cards)")
    license_note: str | None = None
    engine: Literal["axolotl", "trl", "unsloth"]
    container: ContainerRef
    hardware: Hardware
    stages: list[Stage] = Field(min_length=1)
    export: Export = Field(default_factory=Export)
    pii: PiiPolicy = Field(default_factory=PiiPolicy)
    profiles: dict[str, Profile]
    trust_remote_code_reason: str | None = Field(
        default=None, description="Required when an engine config sets trust_remote_code: true"
    )

    @model_validator(mode="after")
    def _stages_are_consistent(self) -> Recipe:
        seen: list[str] = []
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage name '{stage.name}' is used twice; stage names must be unique")
            if stage.init_from is not None and stage.init_from not in seen:
                raise ValueError(
                    f"stage '{stage.name}': init_from '{stage.init_from}' must name an earlier stage "
                    f"(earlier stages: {seen or 'none'})"
                )
            seen.append(stage.name)
        for pname, profile in self.profiles.items():
            unknown = sorted(set(profile.stages) - set(seen))
            if unknown:
                raise ValueError(f"profile '{pname}' overrides unknown stage(s) {unknown}; stages are {seen}")
        for pname, profile in self.profiles.items():
            unknown_keys = sorted(set(profile.export) - set(Export.model_fields))
            if unknown_keys:
                raise ValueError(f"profile '{pname}': export has unknown key(s) {unknown_keys}")
            self.export_for(pname)  # a bad value raises here, at load time
        missing = {"smoke", "full"} - set(self.profiles)
        if missing:
            raise ValueError(f"profiles {sorted(missing)} are missing: every recipe has 'full' and 'smoke'")
        return self

    def export_for(self, profile: str) -> Export:
        """The export section with the profile's replacements applied (validated again)."""
        changes = self.profiles[profile].export if profile in self.profiles else {}
        return Export.model_validate({**self.export.model_dump(), **changes}) if changes else self.export

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


# ---------------------------------------------------------------- expected-metrics.yaml


class Provenance(Strict):
    value: float = Field(description="The value that was measured")
    hardware: str
    versions: dict[str, str]
    commit: str
    date: dt.date
    run: str | None = Field(default=None, description="Run dir or results file the value comes from")


class Bound(Strict):
    min: float | None = None
    max: float | None = None
    source: Literal["measured", "estimate"]
    measured: Provenance | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _has_bound_and_provenance(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("a bound needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.source == "measured" and self.measured is None:
            raise ValueError(
                "source: measured needs a 'measured' block (value, hardware, versions, commit, date); "
                "use source: estimate for a figure nobody measured"
            )
        return self


# Metrics a stage can report, with what they mean (the gate accepts only these names).
KNOWN_METRICS: dict[str, str] = {
    "train_loss_first": "first logged training loss",
    "train_loss_last": "last logged training loss",
    "train_loss_min": "lowest logged training loss",
    "train_loss_tail": "mean training loss over the last quarter of logged steps",
    "train_loss_drop": "train_loss_first - train_loss_tail (how much the loss fell)",
    "eval_loss": "last evaluation loss on the held-out split",
    "rewards_accuracy_tail": "DPO: mean reward accuracy over the last quarter of logged steps",
    "rewards_margin_first": "DPO: first logged reward margin (chosen - rejected)",
    "rewards_margin_tail": "DPO: mean reward margin over the last quarter of logged steps",
    "rewards_margin_delta": "DPO: rewards_margin_tail - rewards_margin_first (how much the margin rose)",
    "accuracy_tail": "reward model: mean pairwise accuracy (chosen scored above rejected) over the last quarter",
    "eval_accuracy": "reward model: last pairwise accuracy on the held-out split",
    "reward_first": "GRPO/online RL: first logged mean reward of the sampled completions",
    "reward_tail": "GRPO/online RL: mean reward over the last quarter of logged steps",
    "reward_delta": "GRPO/online RL: reward_tail - reward_first (how much the reward rose)",
    "kl_tail": "KTO/GRPO: mean KL to the reference model over the last quarter of logged steps",
    "steps": "optimizer steps logged",
    "tokens_per_second": "tokens processed (padding included) per second of training, over every attempt of a "
    "resumed stage (tokens of all attempts / training seconds of all attempts)",
    "train_runtime_s": "the trainer's own training time in seconds, summed over a resumed stage's attempts",
    "wall_seconds": "the stage's wall time, process start to exit, summed over its attempts",
    "peak_memory_gib": "peak memory: CUDA max allocated on a GPU, else the process's peak RSS",
}


class ExpectedMetrics(Strict):
    recipe: str
    profiles: dict[str, dict[str, dict[str, Bound]]] = Field(description="profile -> stage -> metric -> bound")

    @field_validator("profiles")
    @classmethod
    def _known_profiles(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("no profile has bounds; add at least 'smoke'")
        return value
