"""Inference for BERT-family encoders with no padding in the position-wise layers.

A padded batch makes every linear layer pay for its padding, and on a CPU the linear layers are most
of a forward pass over short texts. Here a batch's real tokens are packed into one `[tokens, hidden]`
matrix: projections, feed-forward, residuals and layer norms run on real tokens only, and attention
alone sees the padded `[batch, heads, length, head_dim]` form. Q, K and V are one product (their
weights side by side). Under bf16 (or fp16) autocast the weights are cast once and kept, where
autocast casts every weight again in every call; the dtypes are otherwise autocast's: products in
bf16, the residual stream and layer norms in fp32.

The same numbers as the transformers forward up to float rounding (tests/model/test_packed.py), for
any `BertModel` (BERT, MiniLM, E5, Contriever) in eval mode with gradients off, on a CPU, where it
was measured (benchmarks/README.md, "Packed inference"): serve's passes of short queries (1.18x in
bf16) and MoCo's key encoder without dropout. Training, other devices, other architectures and
`Encoder.encode` take the transformers forward: encoding a corpus gained 5-10% packed, but resident
memory crept shard after shard (likely the allocator keeping buffers whose sizes change with every
batch) where the transformers forward stays flat (`disabled()`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref

import torch
import torch.nn.functional as F

# CONTRIEVER_PACKED=0 turns packing off (the transformers forward everywhere), for comparison.
ENABLED = os.environ.get("CONTRIEVER_PACKED", "1") != "0"

_LOCAL = threading.local()  # `disabled()` holds for the thread that entered it


@contextlib.contextmanager
def disabled():
    """The transformers forward inside this block, in this thread (`Encoder.encode` uses it)."""
    previous = getattr(_LOCAL, "off", False)
    _LOCAL.off = True
    try:
        yield
    finally:
        _LOCAL.off = previous


# The weights of each model in its inference dtype, made on first use and made again when a
# parameter changes (its storage or its in-place version counter): {model: {dtype: (stamp, layers)}}.
_CAST_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def supports(model: torch.nn.Module) -> bool:
    """A transformers `BertModel` with absolute positions and self-attention only (and `ENABLED`)."""
    if not ENABLED:
        return False
    try:
        from transformers import BertModel
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        return False
    config = model.config
    return (
        isinstance(model, BertModel)
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not config.is_decoder
        and not getattr(config, "add_cross_attention", False)
    )


def applies(model: torch.nn.Module, input_ids: torch.Tensor) -> bool:
    """Whether `packed_forward` serves this call: inference (eval mode, no gradients) on a CPU, with
    the weights in fp32 (bf16 comes from autocast)."""
    return (
        input_ids.device.type == "cpu"
        and not getattr(_LOCAL, "off", False)
        and not model.training
        and not torch.is_grad_enabled()
        and supports(model)
        and model.embeddings.word_embeddings.weight.dtype == torch.float32
    )


def _layer_weights(model: torch.nn.Module, dtype: torch.dtype) -> list[tuple[torch.Tensor, ...]]:
    """Per layer: (qkv weight, qkv bias, output, its bias, intermediate, its bias, out, its bias) in `dtype`."""
    layers = model.encoder.layer
    params = [p for layer in layers for p in _linear_params(layer)]
    stamp = tuple((p.data_ptr(), _version(p)) for p in params)
    per_dtype = _CAST_WEIGHTS.setdefault(model, {})
    cached = per_dtype.get(dtype)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    weights = []
    for layer in layers:
        linear = _linear_params(layer)  # Q, K, V (weight, bias each), then the other three layers'
        qkv = (torch.cat(linear[0:6:2]), torch.cat(linear[1:6:2]))
        weights.append(tuple(t.detach().to(dtype).contiguous() for t in (*qkv, *linear[6:])))
    per_dtype[dtype] = (stamp, weights)
    return weights


def _version(tensor: torch.Tensor) -> int:
    """Its in-place version counter; -1 for a model made under `torch.inference_mode()`, whose
    tensors keep none (and cannot be changed in place outside it)."""
    try:
        return tensor._version
    except RuntimeError:
        return -1


def _linear_params(layer) -> tuple[torch.Tensor, ...]:
    """A layer's linear weights and biases: query, key, value, attention output, intermediate, output."""
    attention = layer.attention.self
    return (
        attention.query.weight,
        attention.query.bias,
        attention.key.weight,
        attention.key.bias,
        attention.value.weight,
        attention.value.bias,
        layer.attention.output.dense.weight,
        layer.attention.output.dense.bias,
        layer.intermediate.dense.weight,
        layer.intermediate.dense.bias,
        layer.output.dense.weight,
        layer.output.dense.bias,
    )


def packed_forward(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last hidden states of the real tokens, `[tokens, hidden]` (fp32), and each token's row.

    Tokens are in row-major order of the padded batch (row 0's tokens first); `rows[t]` is token
    t's row in the batch.
    """
    device = input_ids.device
    dtype = (
        torch.get_autocast_dtype(device.type)
        if torch.is_autocast_enabled(device.type)
        else model.embeddings.word_embeddings.weight.dtype
    )
    config = model.config
    batch, length = input_ids.shape
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads
    keep = attention_mask.bool()
    positions = keep.reshape(-1).nonzero().squeeze(1)  # of the real tokens in the flattened batch
    tokens = len(positions)
    # Rows past the real tokens, where shapes cost (see `row_count`), read and write a spare row
    # (index batch * length) of the padded buffers: zeros in, ignored out.
    spare = torch.full((row_count(tokens, dtype) - tokens,), batch * length, device=device)
    rows_in = torch.cat([positions, spare])
    weights = _layer_weights(model, dtype)
    with torch.autocast(device.type, enabled=False):
        embedded = model.embeddings(input_ids=input_ids)  # [batch, length, hidden], with its layer norm
        x = _with_spare_row(embedded.reshape(batch * length, -1)).index_select(0, rows_in).float()
        key_mask = keep[:, None, None, :]  # padding keys get no attention
        for layer, (qkv_w, qkv_b, out_w, out_b, mid_w, mid_b, down_w, down_b) in zip(
            model.encoder.layer, weights
        ):
            qkv = F.linear(x.to(dtype), qkv_w, qkv_b)  # [rows, 3 * hidden]
            padded = qkv.new_zeros(batch * length + 1, qkv.shape[1]).index_copy_(0, rows_in, qkv)
            q, k, v = padded[:-1].view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
            context = _with_spare_row(context.transpose(1, 2).reshape(batch * length, -1))
            attended = F.linear(context.index_select(0, rows_in), out_w, out_b)
            x = layer.attention.output.LayerNorm(attended.float() + x)
            middle = layer.intermediate.intermediate_act_fn(F.linear(x.to(dtype), mid_w, mid_b))
            x = layer.output.LayerNorm(F.linear(middle, down_w, down_b).float() + x)
    return x[:tokens], torch.div(positions, length, rounding_mode="floor")


def row_count(tokens: int, dtype: torch.dtype) -> int:
    """The rows the products run on for `tokens` real tokens: exactly them in fp32; under bf16 or
    fp16, rounded up to a step of 1/8 of the power of two below, at least 16 (at most 12.5% more
    rows, or 15): eight shapes for each doubling of the token count.

    oneDNN keeps compiled kernels and scratch memory for every shape of a low-precision product it
    meets: packed batches of 1 to 32 SciFact queries met 649 row counts and grew resident memory by
    1.1 GB over 1,500 batches (CPU C, bf16); rounded, a long stream meets a few dozen shapes."""
    if dtype == torch.float32 or tokens == 0:
        return tokens
    step = max(16, (1 << (tokens.bit_length() - 1)) // 8)
    return -(-tokens // step) * step


def _with_spare_row(matrix: torch.Tensor) -> torch.Tensor:
    return torch.cat([matrix, matrix.new_zeros(1, matrix.shape[1])])


def pool_packed(
    hidden: torch.Tensor, rows: torch.Tensor, batch: int, pooling: str, normalize: bool
) -> torch.Tensor:
    """`pooling.pool` for packed tokens: "mean" over each row's tokens, "cls" its first token."""
    if pooling == "mean":
        sums = hidden.new_zeros(batch, hidden.shape[1]).index_add_(0, rows, hidden)
        counts = torch.bincount(rows, minlength=batch).clamp(min=1).to(hidden.dtype)
        vectors = sums / counts[:, None]
    elif pooling == "cls":
        starts = torch.searchsorted(rows, torch.arange(batch, device=rows.device))
        vectors = hidden.index_select(0, starts)
    else:
        raise ValueError(f"unknown pooling {pooling!r}")
    return F.normalize(vectors, dim=-1) if normalize else vectors
