"""Export: merge adapters into their base (bf16), verify, GGUF and AWQ/GPTQ exports, mergekit, model cards."""
