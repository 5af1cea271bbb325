"""Run DeepSpeed ZeRO steps on a tiny bf16 Llama on the CPU (one gloo process) and print, as JSON, what its
optimizer keeps (the dtype and size of its fp32 partitions and AdamW states) and what its second step allocates on
top (torch.profiler's memory timeline). Used by test_deepspeed_masters.py in its own process, since DeepSpeed
initialises torch.distributed for the whole interpreter.

Arguments: ZeRO stage, a free port, and the AdamW kernel of the client optimizer ("fused" or "foreach"), which is
how the HF Trainer hands its optimizer to DeepSpeed when the DeepSpeed config names none."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path


def step_allocation(step) -> int:
    """Bytes the call allocates above what was allocated when it started, at its peak (CPU memory timeline)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "timeline.raw.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    totals = [sum(row) for row in sizes]
    return max(totals) - totals[0]


def main(stage: int, port: str, kernel: str) -> dict[str, object]:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=1024)  # fmt: skip
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    client = torch.optim.AdamW(model.parameters(), lr=1e-4, **{kernel: True})
    ds = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "bf16": {"enabled": True},
          "zero_optimization": {"stage": stage}}  # fmt: skip
    # DeepSpeed's CPU backend JIT-compiles its shared-memory all-reduce (C++, 80 CPU-s here) at init, again whenever the
    # venv's path differs (each clone): one rank never uses it, and ZeRO's step does not (inference layers only).
    deepspeed.comm.torch.build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo")
    engine, opt, _, _ = deepspeed.initialize(model=model, optimizer=client, config=ds)
    ids = torch.randint(0, 1024, (1, 16))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()  # the first step also creates the AdamW states
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    step_bytes = step_allocation(engine.step)
    flat = getattr(opt, "fp32_partitioned_groups_flat", None) or opt.single_partition_of_fp32_groups
    states = [v for s in opt.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.numel() > 1]
    return {
        "params": params,
        "model_dtypes": sorted({str(p.dtype) for p in engine.module.parameters()}),
        "master_dtypes": sorted({str(t.dtype) for t in flat}),
        "master_numel": sum(t.numel() for t in flat),
        "state_dtypes": sorted({str(t.dtype) for t in states}),
        "state_numel": sum(t.numel() for t in states),
        "step_bytes_per_param": step_bytes / params,
    }


if __name__ == "__main__":
    print("PROBE " + json.dumps(main(int(sys.argv[1]), sys.argv[2], sys.argv[3])))
