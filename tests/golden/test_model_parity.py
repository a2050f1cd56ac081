"""Parity of the float golden model with Hugging Face transformers (torch, float32, KV cache).

Random tiny models of both families are built with transformers, saved with save_pretrained and
imported through golden.checkpoint; every one of DECODE_STEPS cached decode steps must give
logits within the derived float32 bound of transformers' (tests/tolerances.py: two float32
evaluations, each side rounding its RoPE angles its own way), and the greedy tokens must be identical.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("LOCKSTEP_REQUIRE_PARITY"):
    # scripts/test.sh installs the parity extra and sets this: there, a missing torch is a failure.
    import torch
    import transformers
else:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

from golden.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from golden.model import Transformer, init_weights  # noqa: E402
from tests.tolerances import model_bound  # noqa: E402

DECODE_STEPS = 32
PERTURB = 0.1  # added to every parameter so norm weights and biases are not left at 1 and 0

# (id, family, transformers config arguments). Head counts include 3 and 6 (not powers of two),
# grouped-query attention (6 query / 2 kv heads), tied and untied heads, a head_dim that differs
# from d_model / n_heads, and a non-default rope_theta.
CASES = [
    ("gpt2-3heads-tied", "gpt2", dict(vocab_size=61, n_embd=48, n_layer=2, n_head=3, n_positions=64)),
    ("gpt2-4heads-untied", "gpt2", dict(vocab_size=40, n_embd=32, n_layer=3, n_head=4, n_positions=48,
                                        n_inner=56, tie_word_embeddings=False, layer_norm_epsilon=1e-6)),
    ("llama-gqa-6q2kv", "llama", dict(vocab_size=61, hidden_size=48, intermediate_size=80,
                                      num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                                      head_dim=8, max_position_embeddings=64, rope_theta=500.0,
                                      tie_word_embeddings=False)),
    ("llama-mha-3heads-tied", "llama", dict(vocab_size=50, hidden_size=48, intermediate_size=64,
                                            num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=3,
                                            head_dim=8, max_position_embeddings=40, rms_norm_eps=1e-5,
                                            tie_word_embeddings=True)),
]


def _random_case(seed: int) -> tuple[str, str, dict]:
    """A configuration drawn from a seeded generator: family, widths, head counts (any count; Llama
    draws share each KV head among several query heads when it has more than one), depth, tying,
    norm epsilon and rope_theta."""
    rng = np.random.default_rng(seed)
    family = ("gpt2", "llama")[seed % 2]
    n_heads = int(rng.integers(1, 8))
    head_dim = 2 * int(rng.integers(2, 9))
    layers, vocab = int(rng.integers(1, 4)), int(rng.integers(20, 90))
    tied = bool(rng.integers(0, 2))
    positions = int(rng.integers(DECODE_STEPS, 2 * DECODE_STEPS + 1))
    if family == "gpt2":
        kwargs = dict(vocab_size=vocab, n_embd=n_heads * head_dim, n_layer=layers, n_head=n_heads,
                      n_positions=positions, n_inner=int(rng.integers(8, 97)), tie_word_embeddings=tied,
                      layer_norm_epsilon=float(rng.choice([1e-5, 1e-6])))
        ident = f"random{seed}-gpt2-{n_heads}heads"
    else:
        kv = int(rng.choice([d for d in range(1, max(n_heads, 2)) if n_heads % d == 0]))  # grouped
        kwargs = dict(vocab_size=vocab, hidden_size=n_heads * int(rng.integers(2, 13)),
                      intermediate_size=int(rng.integers(8, 97)),
                      num_hidden_layers=layers, num_attention_heads=n_heads, num_key_value_heads=kv,
                      head_dim=head_dim, max_position_embeddings=positions,
                      rope_theta=float(rng.choice([100.0, 10000.0, 500000.0])), tie_word_embeddings=tied,
                      rms_norm_eps=float(rng.choice([1e-5, 1e-6])))
        ident = f"random{seed}-llama-{n_heads}q{kv}kv"
    return ident, family, kwargs


CASES += [_random_case(seed) for seed in range(4)]


def _build_hf(family: str, kwargs: dict, seed: int):
    torch.manual_seed(seed)
    if family == "gpt2":
        cfg = transformers.GPT2Config(bos_token_id=0, eos_token_id=0, **kwargs)
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.LlamaConfig(bos_token_id=0, eos_token_id=0, **kwargs)
        model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * PERTURB)
    return model.eval()


def _hf_decode(model, first: int, steps: int) -> tuple[np.ndarray, list[int]]:
    """Greedy decode with transformers' KV cache; logits of every step and the tokens fed."""
    logits_all, tokens = [], [first]
    past = None
    with torch.no_grad():
        for _ in range(steps):
            out = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1].numpy()
            logits_all.append(logits)
            tokens.append(int(np.argmax(logits)))
    return np.stack(logits_all), tokens


@pytest.mark.parametrize(("family", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cached_decode_matches_transformers(tmp_path, family, kwargs):
    hf = _build_hf(family, kwargs, seed=len(kwargs))
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.config.family == family
    steps = min(DECODE_STEPS, ckpt.config.max_context)
    hf_logits, hf_tokens = _hf_decode(hf, first=1, steps=steps)

    model = Transformer(ckpt.config, ckpt.weights)
    cache = model.new_cache()
    tokens = [1]
    diffs = []
    for step in range(steps):
        logits = model.step(tokens[-1], cache)
        assert logits.dtype == np.float32
        diffs.append(float(np.max(np.abs(logits - hf_logits[step]))))
        tokens.append(int(np.argmax(logits)))
        assert tokens == hf_tokens[: step + 2], f"greedy token differs at step {step}"
    assert steps == DECODE_STEPS
    bound = model_bound(model, positions=steps, rope_differs=True)
    print(f"{family}: max |logit diff| over {steps} steps = {max(diffs):.3g} (bound {bound:.3g})")
    assert max(diffs) <= bound, f"max |logit diff| {max(diffs):.3g} at step {int(np.argmax(diffs))}"
    # The logits are not trivially small: the comparison means something.
    assert np.ptp(hf_logits) > 1.0


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_saved_checkpoint_loads_in_transformers(tmp_path, family):
    """save_checkpoint writes a layout transformers reads back with the same logits."""
    from golden.model import ModelConfig

    config = ModelConfig(family=family, vocab_size=37, d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=4 if family == "gpt2" else 2, head_dim=8, d_ff=48, max_context=24,
                         rope_theta=1000.0, tie_embeddings=family == "gpt2")
    weights = init_weights(config, seed=3, std=0.3)
    rng = np.random.default_rng(4)
    for name, w in weights.items():
        if w.ndim == 1:
            weights[name] = w + rng.standard_normal(w.shape).astype(np.float32) * 0.1
    save_checkpoint(tmp_path, config, weights)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
    with torch.no_grad():
        hf_logits = hf(input_ids=torch.tensor([tokens])).logits[0].numpy()
    model = Transformer(config, weights)
    ours = model.forward(tokens)
    assert np.max(np.abs(ours - hf_logits)) <= model_bound(model, positions=len(tokens), rope_differs=True)
    assert np.ptp(hf_logits) > 1.0


def test_sharded_save_pretrained_imports_identically(tmp_path):
    """transformers' own sharded layout (index + several files) gives the same weights as one file."""
    family, kwargs = CASES[2][1:]
    hf = _build_hf(family, kwargs, seed=1)
    hf.save_pretrained(tmp_path / "one", safe_serialization=True)
    hf.save_pretrained(tmp_path / "many", safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "many" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "many").glob("*.safetensors"))) > 2
    one, many = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "many")
    assert one.config == many.config
    assert one.weights.keys() == many.weights.keys()
    for name in one.weights:
        np.testing.assert_array_equal(one.weights[name], many.weights[name])


def test_demo_model_matches_transformers():
    """The shipped demo checkpoint is a genuine Llama checkpoint: transformers computes the same logits."""
    from golden.checkpoint import demo_model_path, load_demo_model

    ckpt = load_demo_model()
    hf = transformers.AutoModelForCausalLM.from_pretrained(demo_model_path()).eval()
    tokens = ckpt.tokenizer.encode("The old miller walked to the river at dawn.")
    with torch.no_grad():
        hf_logits = hf(input_ids=torch.tensor([tokens])).logits[0].numpy()
    model = Transformer(ckpt.config, ckpt.weights)
    ours = model.forward(tokens)
    assert np.max(np.abs(ours - hf_logits)) <= model_bound(model, positions=len(tokens), rope_differs=True)
    assert (ours.argmax(-1) == hf_logits.argmax(-1)).all()
