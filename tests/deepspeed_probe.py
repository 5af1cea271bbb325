"""Run one DeepSpeed ZeRO step on a tiny bf16 Llama on the CPU (one gloo process) and print, as JSON, what its
optimizer keeps: the dtype and size of its fp32 partitions and AdamW states. Used by test_deepspeed_masters.py in
its own process, since DeepSpeed initialises torch.distributed for the whole interpreter."""

from __future__ import annotations

import json
import os
import sys


def main(stage: int, port: str) -> dict[str, object]:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=256)  # fmt: skip
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    ds = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "bf16": {"enabled": True},
          "zero_optimization": {"stage": stage},
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}}}  # fmt: skip
    deepspeed.init_distributed(dist_backend="gloo")
    engine, opt, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    ids = torch.randint(0, 256, (1, 16))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
    flat = getattr(opt, "fp32_partitioned_groups_flat", None) or opt.single_partition_of_fp32_groups
    states = [v for s in opt.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.numel() > 1]
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "model_dtypes": sorted({str(p.dtype) for p in engine.module.parameters()}),
        "master_dtypes": sorted({str(t.dtype) for t in flat}),
        "master_numel": sum(t.numel() for t in flat),
        "state_dtypes": sorted({str(t.dtype) for t in states}),
        "state_numel": sum(t.numel() for t in states),
    }


if __name__ == "__main__":
    print("PROBE " + json.dumps(main(int(sys.argv[1]), sys.argv[2])))
