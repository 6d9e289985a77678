"bench.rl's rollout copy: the adapters merged into a plain model give the LoRA policy's distribution (fp32 exactly, bf16 to its rounding)."
import torch

from bench.rl import merged_copy
from ftlab.rl import lora_policy
from ftlab.testing import tiny_llama


def _policy():
    # the same model, weights and RNG state the test once built by hand (LlamaConfig, then torch.manual_seed(0)): tiny_llama seeds with 0
    pol = lora_policy(tiny_llama(num_attention_heads=4, max_position_embeddings=32).eval())
    with torch.no_grad():   # B = 0 at init would make merging a no-op
        for n, p in pol.named_parameters():
            if "lora_B" in n: p.normal_(0, 0.5)
    return pol


def test_merged_copy_matches_the_policy():
    pol, x = _policy(), torch.randint(0, 64, (3, 10))
    with torch.no_grad():
        want = pol(input_ids=x).logits.log_softmax(-1)
        m32, m16 = merged_copy(pol), merged_copy(pol, torch.bfloat16)
        got32, got16 = m32(input_ids=x).logits.log_softmax(-1), m16(input_ids=x).logits.float().log_softmax(-1)
    assert not hasattr(m32, "peft_config") and next(m16.parameters()).dtype == torch.bfloat16
    assert any("lora_B" in n for n, _ in pol.named_parameters()), "merging a copy must leave the policy's adapters in place"
    # fp32: the merge only re-associates W x + B A x, so the difference is a few fp32 rounding errors of O(1) logits
    assert (got32 - want).abs().max() < 1e-4
    # bf16 (8-bit mantissa, relative rounding 2^-8 per op): the log-probs move by rounding, not by a change of model
    assert 1e-4 < (got16 - want).abs().max() < 0.25
