"""Decode attention, as the attention unit computes it: the integer specification and its float reference.

One new query per head attends to the KV cache of the sequence so far (``kv_len`` positions, 1 ..
``max_context``). Query heads share KV heads in groups (grouped-query attention): query head ``h``
reads KV head ``h // (n_heads // n_kv_heads)``, as Hugging Face's ``repeat_kv`` arranges them;
``n_kv_heads == n_heads`` is ordinary multi-head attention.

Operands
--------
* ``q``: int8, shape (n_heads, head_dim), per-tensor scale ``q_scale``.
* ``k``, ``v``: int8, shape (kv_len, n_kv_heads, head_dim) (position-major, the order the unit
  streams them), per-tensor scales ``k_scale``, ``v_scale``.
* Result: int8, shape (n_heads, head_dim), per-tensor scale ``out_scale``.
* The real scales enter only as two (multiplier, shift) pairs (:class:`AttentionParams`), made once
  by :meth:`AttentionParams.from_scales` with :func:`golden.numerics.quantize_multiplier`.

The operation sequence (one pass over K and V; for each query head, for each position t)
-------------------------------------------------------------------------------------------
Registers per query head: ``m`` (running max, s16, reset to -32768), ``l`` (denominator, u25,
reset 0), ``acc[head_dim]`` (weighted sum of V, s32 each, reset 0). ``round_shift`` is the
round-half-up step of the requantization rule (:func:`golden.tables.round_shift`).

1. ``s = sum_i q[i] * k[t, i]``: head_dim int8 x int8 products into an s32 sum (exact: head_dim
   <= 131071 can never wrap).
2. ``z = clamp_s16(round_shift(s * score_mult, score_shift))``: 47-bit product. ``z`` is the
   logit ``q.k / sqrt(head_dim)`` in Q11.5 (steps of 1/32, range [-1024, 1024)).
3. If ``z > m`` (a new maximum): ``a = EXP[z - m]``; ``l = round_shift(l * a, 15)`` (40-bit
   product); ``acc[i] = round_shift(acc[i] * a, 15)`` (47-bit products); ``m = z``.
4. ``w = EXP[m - z]`` (u16, Q1.15; a new maximum gets ``EXP[0] = 32768``).
5. ``l = l + w``; ``acc[i] = acc[i] + w * v[t, i]`` (24-bit products).

``EXP[d]`` is :func:`golden.tables.exp_table` (512 entries of ``exp(-d/32)`` in Q1.15) for
``d < 512`` and 0 beyond (:func:`golden.tables.exp_lookup`): a position more than 16 logits below
the maximum gets weight 0. After the last position, per query head:

6. ``(r, p) = reciprocal_fixed(l)``: leading-one position ``p`` (15 <= p <= 24, because the
   maximum contributes exactly 32768 and ``l <= 512 * 32768``), 128-entry seed table, one Newton
   step; ``1/l ~= r * 2**-(15+p)``, ``r`` u16 in Q1.15 (see :mod:`golden.tables`).
7. ``y[i] = round_shift(acc[i] * r, p - 1)``: 48-bit product; ``y = acc / l`` in Q8.16 (the
   softmax-weighted mean of V in V's integer units, |y| <= 2**23).
8. ``out[i] = requantize(y[i], out_mult, out_shift)``: the one requantization rule, for the real
   factor ``v_scale / (out_scale * 2**16)``.

Widths: every register <= 32 bits (``acc``: |acc| <= 128 * 32768 * kv_len, which is why
``max_context <= 512``); every product <= 48 bits. No division anywhere: only the reciprocal table
and its Newton step. The rescale in step 3 rounds, so the result depends on the order of
positions; it is defined by this sequence, in position order 0, 1, ..., kv_len - 1.

:func:`attention_decode_loop` writes the sequence literally, position by position;
:func:`attention_decode` computes the same bits vectorized (scores for all positions at once, the
running maximum by ``maximum.accumulate``, then one fold step per rise of the maximum, which the
rounding in step 3 makes inherently sequential). Tests check the two agree bit for bit.
:func:`attention_ref` is the float64 reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from golden.numerics import MULT_MAX, SHIFT_MAX, check_int8, is_int, is_real, quantize_multiplier, requantize
from golden.tables import EXP_FRAC_BITS, EXP_ONE, EXP_OUT_BITS, exp_lookup, reciprocal_fixed, round_shift

from .errors import InputError, InputTypeError

__all__ = [
    "DEFAULT_MAX_CONTEXT", "HEAD_DIM_MAX", "MAX_CONTEXT_LIMIT", "OUT_FRAC_BITS", "SCORE_BITS",
    "SCORE_MAX", "SCORE_MIN", "AttentionParams", "AttentionShape", "attention_decode",
    "attention_decode_loop", "attention_ref", "attention_scores",
]

#: Width of a softmax score register (signed, Q11.5: EXP_FRAC_BITS fraction bits).
SCORE_BITS = 16
SCORE_MIN = -(1 << (SCORE_BITS - 1))
SCORE_MAX = (1 << (SCORE_BITS - 1)) - 1
#: Longest KV cache the 32-bit weighted-sum registers allow: 128 * 32768 * 512 == 2**31.
MAX_CONTEXT_LIMIT = ((1 << 31) // (128 * EXP_ONE))
#: Longest head whose int32 score can never wrap (head_dim * 128 * 128 <= 2**31 - 1).
HEAD_DIM_MAX = ((1 << 31) - 1) // (128 * 128)
#: Fraction bits of the normalised weighted sum y before the output requantization.
OUT_FRAC_BITS = 16
DEFAULT_MAX_CONTEXT = 128


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if not is_int(value):
        raise InputTypeError(f"{name} must be an integer, not {value!r}")
    if high is None:
        if value < low:
            raise InputError(f"{name} must be a positive integer, not {value}")
    elif not low <= value <= high:
        raise InputError(f"{name} must be in [{low}, {high}], not {value}")
    return int(value)


@dataclass(frozen=True, kw_only=True)
class AttentionShape:
    """The sizes of one decode-attention step, checked.

    Raises TypeError for a non-integer field and ValueError, naming the field and its value, when:
    a size is not positive; ``head_dim`` does not divide ``d_model`` or exceeds ``HEAD_DIM_MAX``;
    ``n_heads`` is not a multiple of ``n_kv_heads``; ``max_context`` is outside
    [1, MAX_CONTEXT_LIMIT]; ``kv_len`` is outside [1, max_context].
    """

    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    max_context: int = DEFAULT_MAX_CONTEXT
    kv_len: int = 1

    def __post_init__(self):
        _check_int("d_model", self.d_model, 1)
        _check_int("n_heads", self.n_heads, 1)
        _check_int("n_kv_heads", self.n_kv_heads, 1)
        _check_int("head_dim", self.head_dim, 1, HEAD_DIM_MAX)
        _check_int("max_context", self.max_context, 1, MAX_CONTEXT_LIMIT)
        _check_int("kv_len", self.kv_len, 1, self.max_context)
        if self.d_model % self.head_dim:
            raise InputError(f"head_dim must divide d_model ({self.d_model}), not {self.head_dim}")
        if self.n_heads % self.n_kv_heads:
            raise InputError(f"n_heads must be a multiple of n_kv_heads ({self.n_kv_heads}), "
                             f"not {self.n_heads}")

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self) -> np.ndarray:
        """The KV head each query head reads: ``h // group``."""
        return np.arange(self.n_heads) // self.group


@dataclass(frozen=True, kw_only=True)
class AttentionParams:
    """The two (multiplier, shift) pairs the attention unit holds in registers.

    ``score_*``: the real factor ``q_scale * k_scale / sqrt(head_dim) * 2**EXP_FRAC_BITS`` (int32
    dot product -> Q11.5 logit). ``out_*``: ``v_scale / (out_scale * 2**OUT_FRAC_BITS)`` (Q8.16
    weighted mean of V -> int8 output). Multipliers in [0, 32767], shifts in [0, 46].
    """

    score_mult: int
    score_shift: int
    out_mult: int
    out_shift: int

    def __post_init__(self):
        _check_int("score_mult", self.score_mult, 0, MULT_MAX)
        _check_int("score_shift", self.score_shift, 0, SHIFT_MAX)
        _check_int("out_mult", self.out_mult, 0, MULT_MAX)
        _check_int("out_shift", self.out_shift, 0, SHIFT_MAX)

    @classmethod
    def from_scales(cls, *, q_scale: float, k_scale: float, v_scale: float, out_scale: float,
                    head_dim: int) -> AttentionParams:
        """Convert real per-tensor scales once (floats stop here)."""
        head_dim = _check_int("head_dim", head_dim, 1, HEAD_DIM_MAX)
        for name, s in (("q_scale", q_scale), ("k_scale", k_scale), ("v_scale", v_scale),
                        ("out_scale", out_scale)):
            if not is_real(s):
                raise InputTypeError(f"{name} must be a real number, not {s!r}")
            if not (math.isfinite(s) and s > 0):
                raise InputError(f"{name} must be finite and positive, not {s}")
        score = float(q_scale) * float(k_scale) / math.sqrt(head_dim) * (1 << EXP_FRAC_BITS)
        out = float(v_scale) / (float(out_scale) * (1 << OUT_FRAC_BITS))
        sm, ss = quantize_multiplier(score)
        om, os_ = quantize_multiplier(out)
        return cls(score_mult=sm, score_shift=ss, out_mult=om, out_shift=os_)


def _check_operands(q, k, v, max_context: int):
    q = check_int8("q", q)
    k = check_int8("k", k)
    v = check_int8("v", v)
    if q.ndim != 2:
        raise InputError(f"q must have shape (n_heads, head_dim), not {q.shape}")
    if k.ndim != 3:
        raise InputError(f"k must have shape (kv_len, n_kv_heads, head_dim), not {k.shape}")
    if v.shape != k.shape:
        raise InputError(f"v must have the shape of k {k.shape}, not {v.shape}")
    if k.shape[2] != q.shape[1]:
        raise InputError(f"k head_dim must equal q head_dim ({q.shape[1]}), not {k.shape[2]}")
    n_heads, head_dim = q.shape
    shape = AttentionShape(d_model=n_heads * head_dim, n_heads=n_heads, n_kv_heads=k.shape[1],
                           head_dim=head_dim, max_context=max_context, kv_len=k.shape[0])
    return q, k, v, shape


def attention_scores(q, k, params: AttentionParams, *, max_context: int = DEFAULT_MAX_CONTEXT) -> np.ndarray:
    """Steps 1-2 for every (query head, position): Q11.5 logits ``z``, int64 array (n_heads, kv_len)."""
    q, k, _, shape = _check_operands(q, k, k, max_context)
    return _scores(q, k, params, shape)


def _scores(q, k, params, shape) -> np.ndarray:
    kk = k[:, shape.kv_head(), :]                                    # (T, H, D)
    s = np.einsum("hd,thd->ht", q, kk)                               # exact int64, fits s32
    z = round_shift(s * params.score_mult, params.score_shift)
    return np.clip(z, SCORE_MIN, SCORE_MAX)


def _finish(den, acc, params) -> np.ndarray:
    """Steps 6-8: normalise by the denominator and requantize to int8."""
    r, p = reciprocal_fixed(den)
    y = round_shift(acc * r[..., None], (p + 15 - OUT_FRAC_BITS)[..., None])
    return requantize(y, params.out_mult, params.out_shift)


def attention_decode_loop(q, k, v, params: AttentionParams, *,
                          max_context: int = DEFAULT_MAX_CONTEXT) -> np.ndarray:
    """The attention unit's sequence, written position by position (see the module docstring).

    One head_dim-lane row of multiply-accumulates per position, as the hardware does it. Returns
    int8 values in an int64 array of shape (n_heads, head_dim). Raises TypeError/ValueError for
    non-int8 operands, mismatched shapes or a shape :class:`AttentionShape` rejects.
    """
    q, k, v, shape = _check_operands(q, k, v, max_context)
    out = np.zeros((shape.n_heads, shape.head_dim), dtype=np.int64)
    for h in range(shape.n_heads):
        g = h // shape.group
        m = SCORE_MIN
        den = 0
        acc = np.zeros(shape.head_dim, dtype=np.int64)
        for t in range(shape.kv_len):
            s = int(np.dot(q[h], k[t, g]))                                          # step 1
            z = min(max(int(round_shift(s * params.score_mult, params.score_shift)),
                        SCORE_MIN), SCORE_MAX)                                      # step 2
            if z > m:                                                               # step 3
                a = int(exp_lookup(z - m))
                den = int(round_shift(den * a, EXP_OUT_BITS))
                acc = round_shift(acc * a, EXP_OUT_BITS)
                m = z
            w = int(exp_lookup(m - z))                                              # step 4
            den += w                                                                # step 5
            acc = acc + w * v[t, g]
        out[h] = _finish(np.int64(den), acc, params)                               # steps 6-8
    return out


def attention_decode(q, k, v, params: AttentionParams, *,
                     max_context: int = DEFAULT_MAX_CONTEXT) -> np.ndarray:
    """The same bits as :func:`attention_decode_loop`, vectorized over heads, positions and lanes.

    Positions are grouped into segments that start where the running maximum rises. Inside a
    segment every weight is relative to the same maximum, so segment sums are plain sums; the
    state is then folded over segments with the rescale of step 3 (one rounding per rise, in
    order). Padding segments use a = 32768 and add nothing, which leaves the state exactly as it
    was, so all heads fold in lockstep.
    """
    q, k, v, shape = _check_operands(q, k, v, max_context)
    n_heads, kv_len, head_dim = shape.n_heads, shape.kv_len, shape.head_dim
    z = _scores(q, k, params, shape)                                         # (H, T)
    vv = np.transpose(v[:, shape.kv_head(), :], (1, 0, 2))                   # (H, T, D)

    run_max = np.maximum.accumulate(z, axis=1)
    prev_max = np.concatenate([np.full((n_heads, 1), SCORE_MIN, dtype=np.int64), run_max[:, :-1]],
                              axis=1)
    rise = z > prev_max
    rise[:, 0] = True            # the state is empty before position 0: rescaling it changes nothing
    w = exp_lookup(run_max - z)                                              # step 4
    seg = np.cumsum(rise, axis=1) - 1                                        # segment of each position

    heads = np.broadcast_to(np.arange(n_heads)[:, None], (n_heads, kv_len))
    seg_l = np.zeros((n_heads, kv_len), dtype=np.int64)
    np.add.at(seg_l, (heads, seg), w)
    seg_acc = np.zeros((n_heads, kv_len, head_dim), dtype=np.int64)
    np.add.at(seg_acc, (heads, seg), w[..., None] * vv)
    seg_a = np.full((n_heads, kv_len), EXP_ONE, dtype=np.int64)
    seg_a[heads[rise], seg[rise]] = exp_lookup(np.maximum(z - prev_max, 0))[rise]

    den = seg_l[:, 0]
    acc = seg_acc[:, 0]
    for j in range(1, int(seg.max()) + 1):                                   # one step per rise
        a = seg_a[:, j]
        den = round_shift(den * a, EXP_OUT_BITS) + seg_l[:, j]
        acc = round_shift(acc * a[:, None], EXP_OUT_BITS) + seg_acc[:, j]
    return _finish(den, acc, params)


def attention_ref(q, k, v) -> np.ndarray:
    """Float64 reference: ``softmax(q . k / sqrt(head_dim)) @ v`` per query head, grouped KV heads.

    ``q`` (n_heads, head_dim), ``k`` and ``v`` (kv_len, n_kv_heads, head_dim), real values.
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    group = q.shape[0] // k.shape[1]
    kk = np.repeat(k, group, axis=1)
    vv = np.repeat(v, group, axis=1)
    s = np.einsum("hd,thd->ht", q, kk) / math.sqrt(q.shape[1])
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.einsum("ht,thd->hd", p, vv)
