"""Measure how far the float golden model's logits are from transformers' over long cached decodes.

Usage::

    python scripts/measure_parity.py                      # 5 seeds, 300 steps, a table
    python scripts/measure_parity.py --seeds 3 --steps 64

For each seed a random small Llama (widths, heads, grouped KV, depth, rope_theta drawn from the
seed; every parameter perturbed so norms are not trivial) is built with transformers (torch,
float32), saved with save_pretrained and imported with golden.checkpoint. transformers decodes
greedily with its KV cache; the golden model (float32, and float64) is fed the same tokens. The
table gives the largest |logit difference| over the first 32 steps and over all steps, where
(which step) the largest one falls, and the bound tests/golden/test_model_parity.py would apply
(tests/tolerances.py). Run from the repository root; needs the ``parity`` extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np


def random_llama(seed: int, positions: int) -> dict:
    rng = np.random.default_rng(1000 + seed)
    n_heads = int(rng.choice([2, 3, 4, 6]))
    kv = int(rng.choice([d for d in range(1, n_heads + 1) if n_heads % d == 0]))
    return dict(vocab_size=int(rng.integers(40, 90)), hidden_size=n_heads * int(rng.integers(8, 17)),
                intermediate_size=int(rng.integers(48, 129)), num_hidden_layers=int(rng.integers(2, 4)),
                num_attention_heads=n_heads, num_key_value_heads=kv, head_dim=2 * int(rng.integers(4, 9)),
                max_position_embeddings=positions, rope_theta=float(rng.choice([10000.0, 500000.0])),
                rms_norm_eps=1e-5, tie_word_embeddings=bool(rng.integers(0, 2)))


def measure(seed: int, steps: int, perturb: float = 0.1) -> dict:
    import torch
    import transformers

    from golden.checkpoint import load_checkpoint
    from golden.model import Transformer
    from tests.tolerances import model_bound

    kwargs = random_llama(seed, positions=steps + 8)
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(bos_token_id=0, eos_token_id=0, **kwargs))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * perturb)
    hf.eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        ckpt = load_checkpoint(tmp)
    ours32, ours64 = Transformer(ckpt.config, ckpt.weights), Transformer(ckpt.config, ckpt.weights, np.float64)
    c32, c64 = ours32.new_cache(), ours64.new_cache()
    past, token = None, 1
    d32, d64, peak = [], [], 0.0
    with torch.no_grad():
        for _ in range(steps):
            out = hf(input_ids=torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            ref = out.logits[0, -1].numpy().astype(np.float64)
            d32.append(float(np.max(np.abs(ours32.step(token, c32) - ref))))
            d64.append(float(np.max(np.abs(ours64.step(token, c64) - ref))))
            peak = max(peak, float(np.max(np.abs(ref))))
            token = int(np.argmax(ref))
    short = min(32, steps)
    return dict(seed=seed, config=kwargs, max_abs_logit=peak, f32_short=max(d32[:short]), f32_all=max(d32),
                f32_step=int(np.argmax(d32)), f64_all=max(d64),
                bound=model_bound(ours32, positions=steps, rope_differs=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--perturb", type=float, default=0.1,
                    help="standard deviation of the noise added to every parameter (default 0.1, as the parity test)")
    args = ap.parse_args()
    print(f"| seed | layers | heads q/kv x dim | d_model | rope_theta | max abs logit | float32, steps 0-31 | "
          f"float32, steps 0-{args.steps - 1} (at step) | float64 golden, all steps | derived bound |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [measure(seed, args.steps, args.perturb) for seed in range(args.seeds)]
    for r in rows:
        c = r["config"]
        print(f"| {r['seed']} | {c['num_hidden_layers']} | {c['num_attention_heads']}/{c['num_key_value_heads']} x "
              f"{c['head_dim']} | {c['hidden_size']} | {c['rope_theta']:g} | {r['max_abs_logit']:.2f} | "
              f"{r['f32_short']:.2e} | {r['f32_all']:.2e} ({r['f32_step']}) | {r['f64_all']:.2e} | {r['bound']:.2e} |")
    print(f"float32 over {args.steps} steps: {min(r['f32_all'] for r in rows):.2e} to "
          f"{max(r['f32_all'] for r in rows):.2e}; over the first 32 steps: "
          f"{min(r['f32_short'] for r in rows):.2e} to {max(r['f32_short'] for r in rows):.2e}")


if __name__ == "__main__":
    main()
