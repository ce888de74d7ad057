"""Tiny random transformers of many model types, built from configs in code (no downloads)."""

from __future__ import annotations

import torch

VOCAB = 30522  # the MiniLM tokenizer's vocabulary, so tiny models can read real text
WINDOW = 16  # sliding window of the tiny sliding-window models
DECODERS = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2", "gpt_neox", "gpt2",
            "starcoder2", "granite", "cohere", "mixtral", "qwen2_moe"]
ENCODERS = ["bert", "roberta", "modernbert", "distilbert", "electra"]
VISION = ["vit", "dinov2"]  # patch rows are attention rows too
MODEL_TYPES = DECODERS + ENCODERS + VISION
PATCHES = 17  # 32x32 image, 8x8 patches, plus the CLS token

_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=512)
# what each type exercises: GQA/MQA, sliding windows, QK-norm, soft-capping, partial RoPE, learned positions, MoE
_EXTRA = {
    "llama": dict(num_key_value_heads=2),
    "mistral": dict(num_key_value_heads=2, sliding_window=WINDOW),
    "qwen2": dict(num_key_value_heads=2, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    "qwen3": dict(num_key_value_heads=1, head_dim=16),
    "gemma2": dict(num_key_value_heads=2, head_dim=16, sliding_window=WINDOW, attn_logit_softcapping=20.0,
                   query_pre_attn_scalar=24),
    "gemma3_text": dict(num_key_value_heads=2, head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=24,
                        layer_types=["sliding_attention", "full_attention"]),
    "phi3": dict(num_key_value_heads=2, sliding_window=WINDOW, pad_token_id=0),
    "olmo2": dict(num_key_value_heads=2),
    "gpt_neox": dict(rotary_pct=0.5),
    "gpt2": dict(),
    "starcoder2": dict(num_key_value_heads=2, sliding_window=WINDOW),
    "granite": dict(num_key_value_heads=2),
    "cohere": dict(num_key_value_heads=2, use_qk_norm=True),
    "mixtral": dict(num_key_value_heads=2, num_local_experts=2, num_experts_per_tok=1),
    "qwen2_moe": dict(num_key_value_heads=2, num_experts=2, num_experts_per_tok=1, moe_intermediate_size=32,
                      shared_expert_intermediate_size=32),
    "bert": dict(),
    "roberta": dict(pad_token_id=1),
    "distilbert": dict(dim=64, hidden_dim=96, n_layers=2, n_heads=4),
    "electra": dict(embedding_size=32),
    "modernbert": dict(global_attn_every_n_layers=2, local_attention=WINDOW, pad_token_id=0),
    "vit": dict(image_size=32, patch_size=8, num_channels=3),
    "dinov2": dict(image_size=32, patch_size=8, num_channels=3),
}
_QK_WEIGHTS = ("q_proj", "k_proj", "query", "key", "c_attn", "qkv", "Wqkv", "q_lin", "k_lin")


def tiny_config(model_type: str):
    from transformers import AutoConfig

    kwargs = dict(_COMMON, **_EXTRA[model_type])
    if model_type in VISION:
        del kwargs["vocab_size"], kwargs["max_position_embeddings"]
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(model_type: str, dtype=torch.float32, seed: int = 0):
    """A 2-layer random model in eval mode with peaked attention (query/key weights x 8, so rows
    span many orders of magnitude of probability and the checks are not trivially uniform)."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(model_type), attn_implementation="eager").to(dtype).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 2 and any(part in name for part in _QK_WEIGHTS):
                parameter.mul_(8.0)
    return model


def tiny_inputs(model_type: str, batch: int = 2, length: int = 48, seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    if model_type in VISION:
        return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=generator)}
    return {"input_ids": torch.randint(2, VOCAB, (batch, length), generator=generator)}


def sequence_length(model_type: str, inputs: dict) -> int:
    return PATCHES if model_type in VISION else inputs["input_ids"].shape[1]
