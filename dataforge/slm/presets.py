"""Model presets for the reference SLM: transformers' ``LlamaForCausalLM`` (RoPE, RMSNorm,
SwiGLU MLP, grouped-query attention — the architecture of the SLM surveys' models, e.g.
SmolLM / MobileLLM), never a hand-written transformer.

Sizes count every parameter with tied input/output embeddings at the preset's default vocabulary
(``tests/test_slm.py`` checks them): ``tiny`` ≈ 0.12M (tests only), ``small`` ≈ 5.0M,
``medium`` ≈ 20.5M, ``base`` ≈ 125M (SmolLM-135M's shape with a 32k vocabulary).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PRESET_ALIASES = {"5m": "small", "20m": "medium", "125m": "base"}


@dataclass(frozen=True)
class Preset:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int  # SwiGLU: ~8/3 of hidden, rounded to a multiple of 8
    num_attention_heads: int
    num_key_value_heads: int  # < heads: grouped-query attention
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0


PRESETS: dict[str, Preset] = {
    "tiny": Preset(512, 64, 2, 172, 4, 2),
    "small": Preset(8192, 256, 4, 688, 8, 4),
    "medium": Preset(16384, 384, 9, 1024, 6, 2),
    "base": Preset(32768, 576, 30, 1536, 9, 3),
}


def get_preset(name: str) -> Preset:
    key = PRESET_ALIASES.get(name.lower(), name.lower())
    if key not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)} "
                         f"(or {', '.join(PRESET_ALIASES)})")
    return PRESETS[key]


def llama_config(preset: str, vocab_size: int | None = None, eos_token_id: int = 0, max_positions: int | None = None):
    """A ``LlamaConfig`` for ``preset``; ``vocab_size`` is the trained tokenizer's (it may come
    out smaller than the preset asks for on a small corpus)."""
    from transformers import LlamaConfig

    p = asdict(get_preset(preset))
    if vocab_size is not None:
        p["vocab_size"] = vocab_size
    if max_positions is not None:
        p["max_position_embeddings"] = max(max_positions, 16)
    return LlamaConfig(**p, hidden_act="silu", rms_norm_eps=1e-5, tie_word_embeddings=True, attention_dropout=0.0,
                       initializer_range=0.02, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
                       pad_token_id=eos_token_id, use_cache=True)


def build_model(preset: str, vocab_size: int | None = None, seed: int = 0, eos_token_id: int = 0,
                max_positions: int | None = None):
    """A freshly initialised ``LlamaForCausalLM`` (deterministic for a seed), fp32."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = llama_config(preset, vocab_size, eos_token_id, max_positions)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def count_parameters(preset: str, vocab_size: int | None = None) -> int:
    """Parameters of ``preset`` (built on the meta device: no memory, no time)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(preset, vocab_size))
    return sum(p.numel() for p in model.parameters())
