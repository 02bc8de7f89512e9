"""GPU specifications the estimator needs: memory, dense bf16 TFLOP/s, memory bandwidth and interconnect, each with its source."""

from __future__ import annotations

import dataclasses

from ftlaunch.core import errors


@dataclasses.dataclass(frozen=True)
class GPU:
    """One accelerator model. Memory in GB (1e9 bytes, the unit of every memory figure ftlaunch shows), from
    what the driver reports per GPU (SkyPilot's GpuInfo MemoryInfo, in MiB), checked against the vendor's
    datasheet (whose "16 GB", "80 GB" are binary: 80 GiB = 85.9 GB); the estimator's 1 GB runtime overhead
    covers the CUDA context and estimator.HEADROOM the rest of the margin."""

    name: str  # canonical name, as SkyPilot's catalog spells it
    memory_gb: float  # driver-visible memory per GPU, GB (1e9 bytes)
    bf16_tflops: float  # dense (no 2:4 sparsity) tensor-core TFLOP/s at the training precision (fp16 where no bf16)
    bandwidth_gbps: float  # HBM/GDDR bandwidth, GB/s
    interconnect: str  # GPU-to-GPU link inside a node
    interconnect_gbps: float  # GB/s per GPU, one direction summed over links (PCIe Gen4 x16 = 32)
    bf16: bool = True  # False: no bfloat16 tensor cores, training runs in fp16 with loss scaling
    aliases: tuple[str, ...] = ()
    source: str = ""

    @property
    def nvlink(self) -> bool:
        return "NVLink" in self.interconnect


_MIB = 1024 * 1024 / 1e9  # GB per MiB

GPUS: tuple[GPU, ...] = (
    GPU("T4", 15360 * _MIB, 65.0, 320, "PCIe Gen3 x16", 16, bf16=False, aliases=("tesla-t4", "nvidia-tesla-t4"),
        source="FP16 tensor 65 TF: winston-zhang-orz/gpu-specs; 320 GB/s (0.3 TB/s in acml-project1); "
               "16 GB GDDR6 on NVIDIA's T4 datasheet, of which the driver reports 15360 MiB (16.1 GB; nvidia-smi "
               "on g4dn/Colab T4s, recalled); SkyPilot's catalog rounds it up to 16384 MiB (17.2 GB), "
               "which made a 15.8 GB job look like it fits; no bf16 (Turing)"),
    GPU("L4", 22888 * _MIB, 121.0, 300, "PCIe Gen4 x16", 32, aliases=("nvidia-l4",),
        source="121 TF dense bf16 (242 sparse), 300 GB/s: winston-zhang-orz/gpu-specs; 22888 MiB: SkyPilot AWS "
               "catalog (GCP reports 24576)"),
    GPU("A10G", 22888 * _MIB, 70.0, 600, "PCIe Gen4 x16", 32, aliases=("a10g-24gb",),
        source="24 GB, 600 GB/s: baseten.co 'NVIDIA A10 vs A10G'; ~70 TF bf16 tensor (Baseten's table, recalled; "
               "NVIDIA publishes no A10G datasheet); 22888 MiB: SkyPilot AWS catalog"),
    GPU("A10", 22888 * _MIB, 125.0, 600, "PCIe Gen4 x16", 32, aliases=("a10-24gb",),
        source="125 TF dense bf16, 600 GB/s, 24 GB: NVIDIA A10 datasheet via astroC86/gpu-datasheet; usable "
               "memory taken as the A10G's 22888 MiB (same 24 GB GDDR6 board memory)"),
    GPU("L40S", 45776 * _MIB, 362.05, 864, "PCIe Gen4 x16", 32, aliases=("l40s-48gb",),
        source="362 TF dense bf16 (733 sparse), 864 GB/s: NVIDIA L40S datasheet (recalled, not in a stored source); "
               "45776 MiB: SkyPilot AWS catalog"),
    GPU("V100", 16384 * _MIB, 125.0, 900, "NVLink 2 (300 GB/s)", 150, bf16=False, aliases=("tesla-v100",),
        source="125 TF fp16 tensor, 900 GB/s: NVIDIA V100 datasheet (recalled); 16384 MiB: SkyPilot GCP catalog"),
    GPU("V100-32GB", 32768 * _MIB, 125.0, 900, "NVLink 2 (300 GB/s)", 150, bf16=False,
        source="as V100; 32768 MiB: SkyPilot AWS catalog (p3dn)"),
    GPU("A100", 40960 * _MIB, 312.0, 1555, "NVLink 3 (600 GB/s)", 300, aliases=("a100-40gb", "nvidia-tesla-a100"),
        source="312 TF dense bf16, 1,555 GB/s: astroC86/gpu-datasheet; 40960 MiB: SkyPilot AWS catalog"),
    GPU("A100-80GB", 81920 * _MIB, 312.0, 2039, "NVLink 3 (600 GB/s)", 300, aliases=("a100-80g", "a100_80gb"),
        source="312 TF, 2,039 GB/s (SXM): citsjtu2020/LLM-Prof hardware_spec; 81920 MiB: SkyPilot AWS catalog"),
    GPU("H100", 81920 * _MIB, 989.4, 3350, "NVLink 4 (900 GB/s)", 450, aliases=("h100-sxm", "h100-80gb", "h100-mega"),
        source="SXM5: 989.4 TF dense bf16: glennklockwood.com/garden/processors/h100; 3,350 GB/s: hpctech NVIDIA "
               "H100 table; 81920 MiB: SkyPilot AWS catalog"),
    GPU("H100-PCIE", 81920 * _MIB, 756.0, 2000, "PCIe Gen5 x16", 64, aliases=("h100-pcie-80gb",),
        source="756 TF dense bf16 (1,513 sparse), 2,000 GB/s: hpctech NVIDIA H100 table"),
    GPU("H100-NVL", 94 * 1.0, 835.0, 3900, "NVLink bridge (600 GB/s) + PCIe Gen5", 300, aliases=("h100nvl",),
        source="94 GB HBM3; ~835 TF dense bf16, 3.9 TB/s: recalled from NVIDIA's H100 NVL datasheet, not verified"),
    GPU("H200", 144384 * _MIB, 989.0, 4800, "NVLink 4 (900 GB/s)", 450, aliases=("h200-141gb",),
        source="989 TF dense bf16, 4.8 TB/s: astroC86/gpu-datasheet, LLM-Prof; 144384 MiB: SkyPilot AWS/GCP catalogs"),
    GPU("B200", 183359 * _MIB, 2250.0, 8000, "NVLink 5 (1,800 GB/s)", 900, aliases=("b200-180gb",),
        source="2,250 TF dense bf16 (HGX B200), 8 TB/s: astroC86 DGX B200 row halved for sparsity, LLM-Prof; "
               "183359 MiB: SkyPilot AWS catalog"),
)

_BY_NAME: dict[str, GPU] = {}
for _gpu in GPUS:
    for _key in (_gpu.name, *_gpu.aliases):
        _BY_NAME[_key.lower()] = _gpu


def get(name: str) -> GPU:
    """The GPU called `name` (case-insensitive; 'a100-80gb', 'h100', 'l40s'); UserError naming the known ones."""
    gpu = find(name)
    if gpu is None:
        raise errors.UserError(f"unknown GPU '{name}'.", hint="use one of " + ", ".join(g.name.lower() for g in GPUS))
    return gpu


def find(name: str | None) -> GPU | None:
    """Like get(), but None for an unknown or empty name."""
    return _BY_NAME.get((name or "").strip().lower())


def same(requested: str, candidate: str) -> bool:
    """True when a user's GPU request ('a100') names the catalog's `candidate` ('A100'). 'a100' means 40 GB."""
    want, have = find(requested), find(candidate)
    return want is not None and want is have
