"""The workload catalogue: tensor lists of real models, computed from their public configs.

Each builder takes the config values a model's ``config.json`` publishes and
returns the tensors its checkpoint holds, under the checkpoint's own names.
``CATALOGUE`` maps a workload name to a builder of no arguments.
"""

from __future__ import annotations

from typing import Callable

from halsim.workloads import TensorSpec, Workload

MiB = 1 << 20
GiB = 1 << 30


def llama_tensors(
    *,
    hidden_size: int,
    intermediate_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    vocab_size: int,
    tie_word_embeddings: bool,
    dtype: str,
    head_dim: int | None = None,
    norm_dtype: str | None = None,
) -> list[TensorSpec]:
    """A Llama/Mistral-style decoder under Hugging Face ``LlamaForCausalLM`` names.

    Projections are ``[out_features, in_features]`` (``nn.Linear``); grouped-query
    attention shrinks k/v to ``num_key_value_heads * head_dim`` rows. RoPE
    frequencies are computed at load time and are not in the checkpoint.
    """
    head_dim = head_dim or hidden_size // num_attention_heads
    q_rows, kv_rows = num_attention_heads * head_dim, num_key_value_heads * head_dim
    norm_dtype = norm_dtype or dtype

    def t(name: str, shape: tuple[int, ...], dt: str = dtype) -> TensorSpec:
        return TensorSpec(name=name, dtype=dt, shape=shape)

    tensors = [t("model.embed_tokens.weight", (vocab_size, hidden_size))]
    for i in range(num_hidden_layers):
        p = f"model.layers.{i}"
        tensors += [
            t(f"{p}.input_layernorm.weight", (hidden_size,), norm_dtype),
            t(f"{p}.self_attn.q_proj.weight", (q_rows, hidden_size)),
            t(f"{p}.self_attn.k_proj.weight", (kv_rows, hidden_size)),
            t(f"{p}.self_attn.v_proj.weight", (kv_rows, hidden_size)),
            t(f"{p}.self_attn.o_proj.weight", (hidden_size, q_rows)),
            t(f"{p}.post_attention_layernorm.weight", (hidden_size,), norm_dtype),
            t(f"{p}.mlp.gate_proj.weight", (intermediate_size, hidden_size)),
            t(f"{p}.mlp.up_proj.weight", (intermediate_size, hidden_size)),
            t(f"{p}.mlp.down_proj.weight", (hidden_size, intermediate_size)),
        ]
    tensors.append(t("model.norm.weight", (hidden_size,), norm_dtype))
    if not tie_word_embeddings:  # tied heads reuse embed_tokens and are not stored
        tensors.append(t("lm_head.weight", (vocab_size, hidden_size)))
    return tensors


def gpt2_tensors(
    *, n_embd: int, n_layer: int, vocab_size: int, n_positions: int, dtype: str, n_inner: int | None = None
) -> list[TensorSpec]:
    """GPT-2 under the names of Hugging Face's ``gpt2`` ``model.safetensors``.

    GPT-2 uses ``Conv1D``, whose weights are ``[in_features, out_features]``
    (so ``c_attn`` is ``[768, 2304]``), every projection has a bias, and the
    LM head is tied to ``wte``. The causal-mask buffers (``h.N.attn.bias``)
    some older exports carry are not parameters and are left out.
    """
    n_inner = n_inner or 4 * n_embd

    def t(name: str, *shape: int) -> TensorSpec:
        return TensorSpec(name=name, dtype=dtype, shape=shape)

    tensors = [t("wte.weight", vocab_size, n_embd), t("wpe.weight", n_positions, n_embd)]
    for i in range(n_layer):
        p = f"h.{i}"
        tensors += [
            t(f"{p}.ln_1.weight", n_embd),
            t(f"{p}.ln_1.bias", n_embd),
            t(f"{p}.attn.c_attn.weight", n_embd, 3 * n_embd),
            t(f"{p}.attn.c_attn.bias", 3 * n_embd),
            t(f"{p}.attn.c_proj.weight", n_embd, n_embd),
            t(f"{p}.attn.c_proj.bias", n_embd),
            t(f"{p}.ln_2.weight", n_embd),
            t(f"{p}.ln_2.bias", n_embd),
            t(f"{p}.mlp.c_fc.weight", n_embd, n_inner),
            t(f"{p}.mlp.c_fc.bias", n_inner),
            t(f"{p}.mlp.c_proj.weight", n_inner, n_embd),
            t(f"{p}.mlp.c_proj.bias", n_embd),
        ]
    tensors += [t("ln_f.weight", n_embd), t("ln_f.bias", n_embd)]
    return tensors


# --- the catalogue ------------------------------------------------------------------


def iree_1gib() -> Workload:
    count, size = 32, 32 * MiB
    rows, cols = 2048, size // (2048 * 4)  # F32: 2048 x 4096 = 32 MiB
    return Workload(
        name="iree-1gib",
        description="1 GiB of constants: the model size IREE's HAL file API change (PR #14665) was measured on",
        source=(
            "IREE PR #14665 ('Reworking constant upload with a HAL file API'). The PR text consulted "
            "gives no per-tensor breakdown, so this is exactly 1 GiB (2**30 bytes) of data as "
            f"{count} F32 tensors of 32 MiB ([{rows}, {cols}]): big enough that whole-buffer staging "
            "needs a 1 GiB host copy, and regular, so chunk and slot effects are easy to read."
        ),
        dtype="F32",
        tensors=tuple(
            TensorSpec(name=f"constant_{i:02d}", dtype="F32", shape=(rows, cols)) for i in range(count)
        ),
    )


def llama_3_8b() -> Workload:
    return Workload(
        name="llama-3-8b",
        description="Meta Llama 3 8B, BF16: 291 tensors, 8,030,261,248 parameters (16.06 GB)",
        source=(
            "meta-llama/Meta-Llama-3-8B config.json: hidden_size=4096, intermediate_size=14336, "
            "num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, "
            "tie_word_embeddings=false, torch_dtype=bfloat16; Hugging Face tensor names. The published "
            "checkpoint is sharded into 4 files; this is the same tensors as one file."
        ),
        dtype="BF16",
        tensors=tuple(
            llama_tensors(
                hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, dtype="BF16",
            )
        ),
    )


def mistral_7b() -> Workload:
    return Workload(
        name="mistral-7b",
        description="Mistral 7B v0.1, BF16: 291 tensors, 7,241,732,096 parameters (14.48 GB)",
        source=(
            "mistralai/Mistral-7B-v0.1 config.json: hidden_size=4096, intermediate_size=14336, "
            "num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, "
            "tie_word_embeddings=false, torch_dtype=bfloat16 (MistralForCausalLM, Llama tensor names). "
            "The published checkpoint is sharded into 2 files; this is the same tensors as one file."
        ),
        dtype="BF16",
        tensors=tuple(
            llama_tensors(
                hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False, dtype="BF16",
            )
        ),
    )


def gpt2() -> Workload:
    return Workload(
        name="gpt2",
        description="GPT-2 small (124M), F32: 148 tensors, 124,439,808 parameters (498 MB)",
        source=(
            "openai-community/gpt2 config.json: n_embd=768, n_layer=12, n_head=12, vocab_size=50257, "
            "n_positions=1024, n_inner=null (4*n_embd), F32 weights, lm_head tied to wte; tensor names "
            "and Conv1D [in, out] shapes as in its model.safetensors (h.0.attn.c_attn.weight [768, 2304])."
        ),
        dtype="F32",
        tensors=tuple(gpt2_tensors(n_embd=768, n_layer=12, vocab_size=50257, n_positions=1024, dtype="F32")),
    )


def tiny() -> Workload:
    return Workload(
        name="test-small",
        description="A 2-layer toy Llama of about 250 KB, for tests and demos that need a real file fast",
        source=(
            "Synthetic, Llama-shaped: hidden_size=64, intermediate_size=176, 2 layers, 4 heads, "
            "2 kv heads, vocab_size=250, untied; BF16 weights with F32 norms (as some exporters keep "
            "norms), so the file mixes item sizes and exercises the writer's ordering."
        ),
        dtype="BF16",
        tensors=tuple(
            llama_tensors(
                hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=250, tie_word_embeddings=False, dtype="BF16",
                norm_dtype="F32",
            )
        ),
    )


CATALOGUE: dict[str, Callable[[], Workload]] = {
    "iree-1gib": iree_1gib,
    "llama-3-8b": llama_3_8b,
    "mistral-7b": mistral_7b,
    "gpt2": gpt2,
    "test-small": tiny,
}

__all__ = ["CATALOGUE", "llama_tensors", "gpt2_tensors", "iree_1gib", "llama_3_8b", "mistral_7b", "gpt2", "tiny"]
