"""Export: merge adapters into their base (bf16), later GGUF and quantized exports."""
