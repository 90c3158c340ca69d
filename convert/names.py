"""Renaming tables, as data: fairseq state-dict names to Hugging Face names.

Each rule maps a fairseq name part to its Hugging Face counterpart; one example per rule.
Conv layers and encoder layers carry their index through. Names are for the inner
wav2vec 2.0 model, after the fine-tuned prefix ``w2v_encoder.w2v_model.`` is removed.
"""
from __future__ import annotations

import re

# Whole-name rules, tried in order; \1 keeps a layer index.
FAIRSEQ_TO_HF = [
    # feature_extractor.conv_layers.3.0.weight -> feature_extractor.conv_layers.3.conv.weight
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    # feature_extractor.conv_layers.0.2.weight (GroupNorm) -> feature_extractor.conv_layers.0.layer_norm.weight
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    # feature_extractor.conv_layers.3.2.1.weight (LayerNorm between transposes) -> ...conv_layers.3.layer_norm.weight
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    # layer_norm.weight (over conv features) -> feature_projection.layer_norm.weight
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    # post_extract_proj.weight -> feature_projection.projection.weight
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    # encoder.pos_conv.0.weight_g -> encoder.pos_conv_embed.conv.weight_g
    (r"encoder\.pos_conv\.0\.(.+)", r"encoder.pos_conv_embed.conv.\1"),
    # encoder.layer_norm.weight -> encoder.layer_norm.weight
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    # encoder.layers.5.self_attn.q_proj.weight -> encoder.layers.5.attention.q_proj.weight
    (r"encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
     r"encoder.layers.\1.attention.\2.\3"),
    # encoder.layers.5.self_attn_layer_norm.weight -> encoder.layers.5.layer_norm.weight
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    # encoder.layers.5.fc1.weight -> encoder.layers.5.feed_forward.intermediate_dense.weight
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    # encoder.layers.5.fc2.weight -> encoder.layers.5.feed_forward.output_dense.weight
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    # encoder.layers.5.final_layer_norm.weight -> encoder.layers.5.final_layer_norm.weight
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
    # mask_emb -> masked_spec_embed (training only)
    (r"mask_emb", r"masked_spec_embed"),
    # quantizer.vars -> quantizer.codevectors (pretraining only)
    (r"quantizer\.vars", r"quantizer.codevectors"),
    # quantizer.weight_proj.weight -> quantizer.weight_proj.weight (pretraining only)
    (r"quantizer\.weight_proj\.(weight|bias)", r"quantizer.weight_proj.\1"),
    # project_q.weight -> project_q.weight (pretraining only)
    (r"project_q\.(weight|bias)", r"project_q.\1"),
    # final_proj.weight -> project_hid.weight (pretraining only)
    (r"final_proj\.(weight|bias)", r"project_hid.\1"),
]
_RULES = [(re.compile(pattern + r"\Z"), repl) for pattern, repl in FAIRSEQ_TO_HF]

FINE_TUNED_PREFIX = "w2v_encoder.w2v_model."
# w2v_encoder.proj.weight -> lm_head.weight (the CTC head of a fine-tuned model)
CTC_HEAD = {"w2v_encoder.proj.weight": "lm_head.weight", "w2v_encoder.proj.bias": "lm_head.bias"}


# data2vec-audio's stack of positional convs, tried before the rules above (whose pos_conv.0 is one conv):
# encoder.pos_conv.2.0.weight -> encoder.pos_conv_embed.layers.2.conv.weight
DATA2VEC_POS_CONV = (re.compile(r"encoder\.pos_conv\.(\d+)\.0\.(weight|bias)\Z"),
                     r"encoder.pos_conv_embed.layers.\1.conv.\2")


# A conformer layer's tensors (fairseq's ConformerWav2Vec2EncoderLayer with ESPnet attention), tried before
# the rules above (whose self_attn_layer_norm is a transformer layer's layer_norm); \1 keeps the layer index.
CONFORMER_TO_HF = [
    # encoder.layers.5.ffn1.layer_norm.weight -> encoder.layers.5.ffn1_layer_norm.weight
    (r"encoder\.layers\.(\d+)\.(ffn1|ffn2)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.\2_layer_norm.\3"),
    # encoder.layers.5.ffn1.w_1.weight -> encoder.layers.5.ffn1.intermediate_dense.weight
    (r"encoder\.layers\.(\d+)\.(ffn1|ffn2)\.w_1\.(weight|bias)", r"encoder.layers.\1.\2.intermediate_dense.\3"),
    # encoder.layers.5.ffn2.w_2.bias -> encoder.layers.5.ffn2.output_dense.bias
    (r"encoder\.layers\.(\d+)\.(ffn1|ffn2)\.w_2\.(weight|bias)", r"encoder.layers.\1.\2.output_dense.\3"),
    # encoder.layers.5.self_attn.linear_pos.weight, .pos_bias_u: the same names
    (r"encoder\.layers\.(\d+)\.self_attn\.((linear_q|linear_k|linear_v|linear_out|linear_pos)\.(weight|bias)"
     r"|pos_bias_u|pos_bias_v)", r"encoder.layers.\1.self_attn.\2"),
    # encoder.layers.5.self_attn_layer_norm.weight: the same name
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    # encoder.layers.5.conv_module.batch_norm.running_var: the same name
    (r"encoder\.layers\.(\d+)\.conv_module\.((layer_norm|pointwise_conv1|depthwise_conv|pointwise_conv2)\.weight"
     r"|layer_norm\.bias|batch_norm\.(weight|bias|running_mean|running_var|num_batches_tracked))",
     r"encoder.layers.\1.conv_module.\2"),
]
_CONFORMER_RULES = [(re.compile(pattern + r"\Z"), repl) for pattern, repl in CONFORMER_TO_HF]
# Each rotary layer's saved inv_freq buffer, computed from the base, not read: no Hugging Face name.
ROTARY_BUFFER = re.compile(r"encoder\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq\Z")


def fairseq_to_hf(name: str, data2vec: bool = False, conformer: bool = False) -> str | None:
    """The Hugging Face name of a fairseq tensor name, or None when no rule knows it."""
    if name in CTC_HEAD:
        return CTC_HEAD[name]
    name = name.removeprefix(FINE_TUNED_PREFIX)
    rules = [DATA2VEC_POS_CONV] + _RULES if data2vec else _CONFORMER_RULES + _RULES if conformer else _RULES
    for pattern, repl in rules:
        if pattern.match(name):
            return pattern.sub(repl, name)
    return None
