"""GPU catalog for offline estimates: memory as the driver reports it, dense bf16 throughput, bandwidth, prices.

`memory_gib` is torch's total device memory; `bf16_tflops` the dense bf16 tensor-core peak from the datasheet (0.0
where there is no bf16); prices are USD per GPU-hour on demand, per provider, each with the date it was read: a
dated snapshot, not a quote. Where each figure came from is in `GPU_NOTES`; the conventions behind the fields and
the provider keys: docs/estimate.md, "`estimate/gpus.py`: the GPU catalog".
"""

from __future__ import annotations

import datetime as dt
import re

from ftkit.estimate.specs import Gpu, Price

# ---- where prices were read -------------------------------------------------------------------------------------
_RUNPOD_NOV = dt.date(2026, 11, 9)
_RUNPOD_URL = (
    "https://www.runpod.io/pricing (as transcribed in github.com/datareceipts/data-receipts "
    "109-gpu-pricing/vendors.json, read_on 2026-11-09)"
)
_RUNPOD_OCT = dt.date(2026, 10, 7)
_RUNPOD_OCT_URL = (
    "https://www.runpod.io/pricing (as transcribed in github.com/api-evangelist/runpod "
    "plans/runpod-plans-pricing.yml, read 2026-10-07)"
)
_SERVERLESS = dt.date(2026, 11, 25)  # date of reading; the stored copy is undated
_SERVERLESS_URL = "https://docs.runpod.io/serverless/pricing (flex worker USD per second x 3600)"
_AWS = dt.date(2026, 9, 24)
_AWS_URL = (
    "https://aws.amazon.com/ec2/pricing/on-demand/ us-east-1 Linux: {inst} ${price}/h / {n} GPU "
    "(AWS Price List AmazonEC2 us-east-1 offer file version 20260924211011, as transcribed in a public GitHub "
    "pricing module)"
)
_LAMBDA = dt.date(2026, 9, 20)
_LAMBDA_URL = (
    "https://lambda.ai/instances (as transcribed in github.com/api-evangelist/lambda-labs "
    "plans/lambda-labs-plans-pricing.yml, read 2026-09-20)"
)


def _runpod(tier: str, price: float) -> Price:
    return Price(f"runpod-{tier}", price, None, _RUNPOD_NOV, _RUNPOD_URL, f"Pods, {tier.title()} Cloud")


def _serverless(price_per_s: float, group: str) -> Price:
    note = f"Serverless flex worker, group '{group}' (${price_per_s}/s); not a Pod price"
    return Price("runpod-serverless", round(price_per_s * 3600, 4), None, _SERVERLESS, _SERVERLESS_URL, note)


def _aws(instance: str, instance_price: float, gpus: int) -> Price:
    source = _AWS_URL.format(inst=instance, price=instance_price, n=gpus)
    return Price("aws", instance_price / gpus, None, _AWS, source, f"{instance}, {gpus} GPU, us-east-1")


def _lambda(price: float, note: str) -> Price:
    return Price("lambda", price, None, _LAMBDA, _LAMBDA_URL, note)


# ---- datasheets ---------------------------------------------------------------------------------------------------
_H100 = "https://www.nvidia.com/en-us/data-center/h100/"
_H200 = "https://www.nvidia.com/en-us/data-center/h200/"
_A100 = (
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
)
_L40S = "https://www.nvidia.com/en-us/data-center/l40s/"
_L4 = "https://www.nvidia.com/en-us/data-center/l4/"
_A10G = "https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/"
_ADA = "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf"
_GA102 = "https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf"
_A6000 = (
    "https://www.nvidia.com/content/dam/en-zz/Solutions/design-visualization/quadro-product-literature/"
    "proviz-print-nvidia-rtx-a6000-datasheet-us-nvidia-1454980-r9-web%20(1).pdf"
)
_T4 = "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf"
_V100 = "https://images.nvidia.com/content/technologies/volta/pdf/tesla-volta-v100-datasheet-letter-fnl-web.pdf"

GPUS: dict[str, Gpu] = {
    "h100-sxm": Gpu(
        name="H100 SXM 80GB",
        marketed_gb=80,
        memory_gib=79.19,
        bf16_tflops=989.4,
        mem_bandwidth_gbs=3350,
        prices=(
            _runpod("secure", 3.99),
            _runpod("community", 2.69),
            _aws("p5.48xlarge", 55.04, 8),
            _lambda(4.29, "1x H100 SXM instance; 2x $4.19, 4x $4.09, 8x $3.99 per GPU"),
        ),
        source=_H100,
    ),
    "h100-pcie": Gpu(
        name="H100 PCIe 80GB",
        marketed_gb=80,
        memory_gib=79.11,
        bf16_tflops=756.5,
        mem_bandwidth_gbs=2000,
        prices=(
            _runpod("secure", 2.89),
            _runpod("community", 1.99),
            _lambda(3.29, "1x H100 PCIe instance"),
        ),
        source=_H100,
    ),
    "h200": Gpu(
        name="H200 SXM 141GB",
        marketed_gb=141,
        memory_gib=139.80,
        bf16_tflops=989.4,
        mem_bandwidth_gbs=4800,
        prices=(
            Price("runpod", 4.59, None, _RUNPOD_OCT, _RUNPOD_OCT_URL, "Pods - H200; Secure/Community tier not stated"),
            _aws("p5en.48xlarge", 63.296, 8),
        ),
        source=_H200,
    ),
    "a100-80gb": Gpu(
        name="A100 SXM 80GB",
        marketed_gb=80,
        memory_gib=79.32,
        bf16_tflops=312,
        mem_bandwidth_gbs=2039,
        prices=(
            _runpod("secure", 1.79),
            _runpod("community", 1.39),
            _aws("p4de.24xlarge", 27.44705, 8),
            _lambda(2.79, "8x A100 SXM 80 GB instance (the only A100 80GB size listed)"),
        ),
        source=_A100,
    ),
    "a100-80gb-pcie": Gpu(
        name="A100 PCIe 80GB",
        marketed_gb=80,
        memory_gib=79.15,
        bf16_tflops=312,
        mem_bandwidth_gbs=1935,
        source=_A100,
    ),
    "a100-40gb": Gpu(
        name="A100 SXM 40GB",
        marketed_gb=40,
        memory_gib=39.39,
        bf16_tflops=312,
        mem_bandwidth_gbs=1555,
        prices=(
            _aws("p4d.24xlarge", 21.957642, 8),
            _lambda(1.99, "8x A100 SXM 40 GB instance"),
        ),
        source=_A100,
    ),
    "l40s": Gpu(
        name="L40S 48GB",
        marketed_gb=48,
        memory_gib=44.52,
        bf16_tflops=362.05,
        mem_bandwidth_gbs=864,
        prices=(
            _aws("g6e.xlarge", 1.861, 1),
            _serverless(0.00053, "L40, L40S, 6000 Ada PRO"),
        ),
        source=_L40S,
    ),
    "l4": Gpu(
        name="L4 24GB",
        marketed_gb=24,
        memory_gib=22.03,
        bf16_tflops=121,
        mem_bandwidth_gbs=300,
        prices=(
            _aws("g6.xlarge", 0.8048, 1),
            _serverless(0.00019, "L4, A5000, 3090"),
        ),
        source=_L4,
    ),
    "a10g": Gpu(
        name="A10G 24GB",
        marketed_gb=24,
        memory_gib=22.06,
        bf16_tflops=70,
        mem_bandwidth_gbs=600,
        prices=(_aws("g5.xlarge", 1.006, 1),),
        source=_A10G,
    ),
    "rtx-4090": Gpu(
        name="GeForce RTX 4090 24GB",
        marketed_gb=24,
        memory_gib=23.68,
        bf16_tflops=165.2,
        mem_bandwidth_gbs=1008,
        prices=(_serverless(0.00031, "4090 PRO"),),
        source=_ADA,
    ),
    "rtx-3090": Gpu(
        name="GeForce RTX 3090 24GB",
        marketed_gb=24,
        memory_gib=23.70,
        bf16_tflops=71,
        mem_bandwidth_gbs=936,
        prices=(_serverless(0.00019, "L4, A5000, 3090"),),
        source=_GA102,
    ),
    "rtx-a6000": Gpu(
        name="RTX A6000 48GB",
        marketed_gb=48,
        memory_gib=47.54,
        bf16_tflops=154.85,
        mem_bandwidth_gbs=768,
        prices=(
            _lambda(1.09, "NVIDIA A6000 (listed as 4x instance, $1.09 per GPU)"),
            _serverless(0.00034, "A6000, A40"),
        ),
        source=_A6000,
    ),
    "t4": Gpu(
        name="T4 16GB",
        marketed_gb=16,
        memory_gib=14.75,
        bf16_tflops=0.0,
        mem_bandwidth_gbs=320,
        prices=(_aws("g4dn.xlarge", 0.526, 1),),
        source=_T4,
    ),
    "v100-16gb": Gpu(
        name="V100 SXM2 16GB",
        marketed_gb=16,
        memory_gib=15.78,
        bf16_tflops=0.0,
        mem_bandwidth_gbs=900,
        prices=(
            _aws("p3.2xlarge", 3.06, 1),
            _lambda(0.79, "8x Tesla V100 16 GB instance"),
        ),
        source=_V100,
    ),
    "v100-32gb": Gpu(
        name="V100 32GB",
        marketed_gb=32,
        memory_gib=31.75,
        bf16_tflops=0.0,
        mem_bandwidth_gbs=900,
        source=_V100,
    ),
}

# Where each memory_gib came from, and notes on the throughput figure.
GPU_NOTES: dict[str, str] = {
    "h100-sxm": "memory: torch total_memory 81082-81090 MiB for 'NVIDIA H100 80GB HBM3' in public logs "
    "(nvidia-smi shows 81559MiB, huggingface/text-embeddings-inference#350); bf16: 1,979 TFLOPS with sparsity / 2",
    "h100-pcie": "memory: torch total_memory 81008 MiB for 'NVIDIA H100 PCIe' (public GitHub note); "
    "bf16: 1,513 TFLOPS with sparsity / 2",
    "h200": "memory: torch total_memory 143156 MiB for 'NVIDIA H200' (public GitHub Modal/vLLM script); "
    "bf16: 1,979 TFLOPS with sparsity / 2 (same compute as H100 SXM); 4.8 TB/s HBM3e",
    "a100-80gb": "memory: deviceQuery totalGlobalMem 81221.8 MB (79.318 GiB) for 'NVIDIA A100-SXM4-80GB'; torch OOM "
    "messages on A100 80GB show 79.14-79.25 GiB (levihsu/OOTDiffusion#235, HiDream-ai/VAREdit#6, "
    "lianqi1008/Control-GIC#6); "
    "bf16 312 dense (624 with sparsity)",
    "a100-80gb-pcie": "memory: 81049 MB total global memory for 'NVIDIA A100 80GB PCIe' (ekondis/mixbench#47); "
    "no price sourced",
    "a100-40gb": "memory: deviceQuery 40339 MBytes (42298834944 bytes) for 'NVIDIA A100-SXM4-40GB' "
    "(bottlerocket-os/bottlerocket#3873); torch OOM shows 39.50 GiB on an A100 40GB (TianheWu/CoSeR#10); "
    "A100-PCIE-40GB has the same memory and bandwidth and maps here",
    "l40s": "memory: torch total_memory 45589 MiB for 'NVIDIA L40S'; OOM 'total capacity of 44.53 GiB' "
    "(Wan-Video/Wan2.1#205); bf16 362.05 dense (733 with sparsity)",
    "l4": "memory: torch OOM 'total capacity of 22.03 GiB' on L4 in several public logs (nvidia-smi 23034MiB, "
    "lmstudio-ai/lmstudio-bug-tracker#1638); bf16 121 dense (242 with sparsity)",
    "a10g": "memory: torch total_memory 22587 MiB for 'NVIDIA A10G' (torch 2.15 nightly log; an older log shows "
    "22.49 GiB, AUTOMATIC1111/stable-diffusion-webui#1259); bf16 ~70 TFLOPS per Baseten's A10 vs A10G comparison "
    "(also used by MosaicML composer's speed monitor): AWS publishes no A10G datasheet, and the A10's 125 does not "
    "apply",
    "rtx-4090": "memory: torch OOM '23.68 GiB total capacity' (zai-org/CogVideo#36; 23.64-23.65 in other reports); "
    "bf16: 165.2 dense with fp32 accumulate (Ada whitepaper); fp16 with fp16 accumulate is 330.3",
    "rtx-3090": "memory: torch OOM '23.70 GiB total capacity' (GaoLii/DSP#10, xiaoxiangAQ/GAS-Net#7); bf16: 71 dense "
    "with fp32 accumulate (GA102 whitepaper); fp16 with fp16 accumulate is 142",
    "rtx-a6000": "memory: torch total_memory 48676 MiB for 'NVIDIA RTX A6000' (public GitHub kernel README); "
    "bf16: datasheet 'Tensor Performance 309.7 TFLOPS' (with sparsity) / 2",
    "t4": "memory: torch total_memory 15095-15109 MiB for 'Tesla T4' (Colab), OOM '14.75 GiB' "
    "(hpcaitech/Open-Sora#697); no bf16 tensor cores (fp16 tensor 65 TFLOPS)",
    "v100-16gb": "memory: torch total_memory 16160 MiB for 'Tesla V100-SXM2-16GB' (YOLOv5 logs); no bf16 tensor cores "
    "(fp16 tensor 125 TFLOPS SXM2, 112 PCIe); no bf16 mixed precision: estimate with fp16",
    "v100-32gb": "memory: torch total_memory 32510 MiB for 'Tesla V100-PCIE-32GB' (public GitHub note); no bf16 "
    "(fp16 tensor 112 PCIe / 125 SXM2); no price sourced",
}


# ---- lookup -------------------------------------------------------------------------------------------------------
_VENDOR_WORDS = re.compile(r"\b(nvidia|geforce|tesla)\b")


def _normalise(name: str) -> tuple[str, set[str]]:
    text = _VENDOR_WORDS.sub(" ", name.lower())
    text = re.sub(r"[^a-z0-9]+", " ", text).strip()
    return text, set(text.split())


def _memory_tag(tokens: set[str], compact: str, sizes: tuple[int, ...]) -> int | None:
    for size in sizes:
        if {f"{size}gb", f"{size}g", str(size)} & tokens or f"{size}gb" in compact:
            return size
    return None


def gpu_key(name: str) -> str | None:
    """The catalog key for a loose GPU name or a torch device name ("NVIDIA A100-SXM4-80GB"), or None."""
    if name.strip().lower() in GPUS:
        return name.strip().lower()
    text, tokens = _normalise(name)
    if not text:
        return None
    compact = text.replace(" ", "")
    if "nvl" in tokens or "ada" in tokens or "laptop" in tokens or "mobile" in tokens:
        return None  # H100/H200 NVL, RTX 6000 Ada, laptop parts: different products, not in the catalog
    if "gh200" in compact or "gb200" in compact:
        return None  # Grace superchips: different memory and throughput
    if "h200" in compact:
        return "h200"
    if "h100" in compact:
        return "h100-pcie" if "pcie" in compact else "h100-sxm"
    if "a100" in compact:
        size = _memory_tag(tokens, compact, (40, 80))
        if size == 40:
            return "a100-40gb"
        return "a100-80gb-pcie" if "pcie" in compact else "a100-80gb"
    if "l40s" in tokens or compact.endswith("l40s") or "l40s48gb" in compact:
        return "l40s"
    if "l4" in tokens or compact in {"l4", "l424gb"}:
        return "l4"
    if "a10g" in tokens or compact.startswith("a10g"):
        return "a10g"
    if "4090" in tokens or "rtx4090" in compact:
        return None if {"d", "ti"} & tokens or "4090d" in compact else "rtx-4090"
    if "3090" in tokens or "rtx3090" in compact:
        return None if "ti" in tokens or "3090ti" in compact else "rtx-3090"
    if "a6000" in tokens or "rtxa6000" in compact:
        return "rtx-a6000"
    if "t4" in tokens:
        return "t4"
    if "v100" in compact:
        return "v100-32gb" if _memory_tag(tokens, compact, (32,)) == 32 else "v100-16gb"
    return None


def lookup_gpu(name: str) -> Gpu | None:
    """A catalog GPU from a key, a loose name ("H100", "h100-80gb", "a100 40gb") or a torch device name."""
    key = gpu_key(name)
    return GPUS[key] if key else None
