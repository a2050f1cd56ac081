"""Float tolerances of the test suite, derived from the arithmetic's precision and the magnitudes
involved, never tuned on one machine's SIMD kernels (docs/testing.md, "Float tolerances: how they
are derived").

A rounded sum of K products has an error of at most about sqrt(K) * eps * sum|a_k * b_k| when the
roundings behave as independent errors (Higham & Mary, 2019; the worst case is K * eps), whatever
order a BLAS or SIMD kernel adds them in. A network chains such reductions: each stage adds its
relative error, carried forward by the residual stream. Hence

    bound = evaluations * eps * scale * (stages * sqrt(K) + rope)

* ``eps``: the machine epsilon of the dtype computed in (2**-23 for float32, 2**-52 for float64);
* ``scale``: the magnitude the compared values are built from, sum|a_k * b_k| of their last
  reduction (for logits: ``logit_scale``), not the values themselves, which may cancel;
* ``stages``: roundings in series on the longest path (``model_stages``); ``K`` the longest
  reduction (``model_reduction``);
* ``rope``: a rotation by an angle rounded to float32 is off by up to eps/2 * |angle|, and an angle
  is at most the position: ``n_layers * max_position`` when the two sides round angles differently;
* ``evaluations``: 2 when two rounded computations are compared, 1 against an exact reference.
"""

from __future__ import annotations

import math

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)       # 2**-23
EPS64 = float(np.finfo(np.float64).eps)       # 2**-52


def rounding_bound(*, eps: float, k: int, scale: float, stages: int = 1, rope: float = 0.0,
                   evaluations: int = 2) -> float:
    """``evaluations * eps * scale * (stages * sqrt(k) + rope)``: see the module docstring."""
    return evaluations * eps * scale * (stages * math.sqrt(k) + rope)


def model_stages(config) -> int:
    """Reductions in series from the embedding to the logits: per layer two norms, the q/k/v
    projection, the scores, the weighted sum, the output projection, the MLP's two matrices; then
    the final norm and the head."""
    return 8 * config.n_layers + 2


def model_reduction(config, positions: int) -> int:
    """The longest reduction of a step over ``positions`` positions."""
    return max(config.d_model, config.d_ff, config.q_dim, positions)


def logit_scale(config, weights) -> float:
    """An upper bound of sum_k |h_k| |W_kj| for the language-model head, from the weights alone.

    h is the final norm's output: ||x / rms(x)||_2 <= sqrt(d_model) (likewise for LayerNorm's
    (x - mean) / std), so ||h||_2 <= sqrt(d_model) * max|gamma| (+ ||beta||_2), and Cauchy-Schwarz
    gives sum_k |h_k| |W_kj| <= ||h||_2 * ||W_:j||_2."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    head = w["tok_embed"].T if config.tie_embeddings else w["lm_head"]
    h = math.sqrt(config.d_model) * np.abs(w["final_norm.weight"]).max()
    if "final_norm.bias" in w:
        h += np.linalg.norm(w["final_norm.bias"])
    return float(h * np.sqrt((head ** 2).sum(axis=0)).max())


def model_bound(model, *, positions: int, eps: float = EPS32, evaluations: int = 2,
                rope_differs: bool = False) -> float:
    """The bound for two evaluations of ``model``'s logits (a golden.model.Transformer or anything
    with ``config`` and ``weights``) over ``positions`` positions. ``rope_differs``: the two sides
    round RoPE angles differently (float32 angles against exact ones, or another library's)."""
    c = model.config
    rope = c.n_layers * positions if rope_differs and c.family == "llama" else 0.0
    return rounding_bound(eps=eps, k=model_reduction(c, positions), scale=logit_scale(c, model.weights),
                          stages=model_stages(c), rope=rope, evaluations=evaluations)


def top2_gap(logits) -> np.ndarray:
    """The gap between the largest and the second-largest logit at each position.

    An argmax (a greedy token, a top-1 agreement) is the same on every machine where this gap
    exceeds the rounding bound of two evaluations: a near tie is the only way rounding changes it.
    """
    s = np.sort(np.asarray(logits, dtype=np.float64), axis=-1)
    return s[..., -1] - s[..., -2]


def rel64(roundings: int) -> float:
    """Relative tolerance for a float64 scalar formula computed two ways with ``roundings`` basic
    operations between them: IEEE 754 rounds each correctly, within eps/2 relative, on every machine."""
    return roundings * EPS64 / 2
