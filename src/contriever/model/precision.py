"""Encoding precision: "auto" made bf16 only where the hardware runs it fast (else fp32), and the
autocast context for a precision. Shared by the encoder and the token-budget measurement
(`contriever.model.batching`)."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast here: a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`precision` with "auto" made the one used on `device`: "bf16" where it is fast, else "fp32"."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_supported(device) else "fp32"


def autocast_context(device: torch.device, precision: str):
    """`precision`: "auto" (bf16 where supported, else fp32), "bf16", "fp16" or "fp32"."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return nullcontext()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"unknown precision {precision!r}; choose auto, bf16, fp16 or fp32")
    return torch.autocast(device_type=device.type, dtype=dtypes[precision])
