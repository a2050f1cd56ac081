"""The quantizer: a float model (golden.model weights) -> an integer model (golden.int_model).

Scheme (docs/quantization.md has the reasons and the measurements)
-----------------------------------------------------------------
* Every value is int8, symmetric, with one real scale per tensor (per value of the program, the
  same for every position): ``real = scale * int``. Activation scales come from calibration:
  the float model runs the *same* op list (:func:`run_float`) over calibration tokens and each
  value's scale is its clipping bound over 127 (``act_clip``: the absolute maximum, or a
  percentile of ``|x|``).
* GEMM weights: int8 with one scale per output channel (``weight_clip``: absmax, or the clipping
  ratio that minimises the squared error per channel). The channel's requantization factor
  ``in_scale * w_scale[c] / out_scale`` becomes ``(mult[c], shift[c])``. Biases are int32 at the
  accumulator scale ``in_scale * w_scale[c]``.
* The token embedding (and GPT-2's position table) is one int8 table with one scale: a row read
  is the residual stream's first value. The LM head has one weight scale for the whole matrix so
  that its int32 accumulators are comparable across the vocabulary: argmax runs on them directly
  (``logit_scale = in_scale * w_scale``). With tied embeddings head and embedding are one table.
* Norm weights, activation tables, RoPE, residual adds, the SwiGLU multiply and attention get
  their integer constants from the golden constructors (NormParams.rms/layer, activation_table,
  rope_multiplier, AddParams.from_scales, multiply_multiplier, AttentionParams.from_scales).
  Every real scale becomes (multiplier, shift) with quantize_multiplier once, here.

Calibration data: the demo model uses its own corpus (golden/data/demo_corpus.txt) minus the
held-out tail (the last 1/20, the training script's validation split), which the quality
measurement uses. Any other checkpoint uses the token sequences the caller supplies, or else
seeded uniformly random tokens (:func:`random_calibration`), which gives usable but looser scales.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from golden.attention import MAX_CONTEXT_LIMIT, AttentionParams
from golden.checkpoint import Checkpoint, demo_model_path, draft_model_path
from golden.int_model import (
    ActivationParams,
    AttentionOpParams,
    EmbedParams,
    GemmParams,
    IntModel,
    KVWriteParams,
    MultiplyParams,
    Op,
    RopeParams,
)
from golden.model import ModelConfig, check_weights
from golden.numerics import INT8_MAX, INT8_MIN, quantize_multiplier
from golden.tables import activation_table, gelu_tanh_float, silu_float
from golden.vector import (
    AddParams,
    NormParams,
    layernorm_ref,
    multiply_multiplier,
    rmsnorm_ref,
    rope_multiplier,
    rope_ref,
)

from .errors import InputError

__all__ = [
    "ACT_CLIPS", "WEIGHT_CLIPS", "calibration_for", "demo_corpus_model", "demo_corpus_splits", "gemm_form",
    "program_structure", "quantize_checkpoint", "quantize_model", "quantize_weight", "random_calibration", "run_float",
    "weight_bytes",
]

#: Activation clipping: "max" (absmax over the calibration data) or a percentile of |x|.
ACT_CLIPS = ("max", "p99.99", "p99.9")
#: Weight clipping: "absmax" per channel, or "mse" (per-channel ratio minimising squared error).
WEIGHT_CLIPS = ("absmax", "mse")
DEFAULT_ACT_CLIP = "p99.99"
DEFAULT_WEIGHT_CLIP = "absmax"
#: Calibration: windows of up to max_context tokens.
DEFAULT_CALIBRATION_WINDOWS = 16
DEMO_CORPUS = demo_model_path().parent / "demo_corpus.txt"


def demo_corpus_model(checkpoint: Checkpoint) -> bool:
    """Whether ``checkpoint`` is one of the shipped models of the demo corpus (the demo model or its
    draft model) with its tokenizer: those calibrate on the corpus and are measured on its held-out text."""
    shipped = (demo_model_path().resolve(), draft_model_path().resolve())
    return Path(checkpoint.path).resolve() in shipped and checkpoint.tokenizer is not None


# --------------------------------------------------------------------------------------------------
# The program's structure (shared by calibration and the integer model)
# --------------------------------------------------------------------------------------------------

def program_structure(config: ModelConfig) -> list[Op]:
    """The ordered op list of one decode step for ``config``, without integer constants.

    Value names: ``x0`` (the residual stream after the embedding), per layer ``L{i}.*``, then
    ``final``, ``logits`` and ``next_token``. Inputs ``token`` and ``position`` are the step's.
    """
    c = config
    gpt2 = c.family == "gpt2"
    norm = "layernorm" if gpt2 else "rmsnorm"
    ops: list[Op] = []

    def add(op, inputs, output, width, layer=None, weights=()):
        ops.append(Op(op=op, inputs=tuple(inputs), output=output, width=width, layer=layer,
                      weights=tuple(weights)))

    def norm_weights(name):
        return (name + ".weight", name + ".bias") if gpt2 else (name + ".weight",)

    def gemm_weights(w, b):
        return (w, b) if gpt2 else (w,)

    if gpt2:
        add("embed", ["token"], "tok", c.d_model, weights=["tok_embed"])
        add("embed", ["position"], "pos", c.d_model, weights=["pos_embed"])
        add("residual_add", ["tok", "pos"], "x0", c.d_model)
    else:
        add("embed", ["token"], "x0", c.d_model, weights=["tok_embed"])
    x = "x0"
    for i in range(c.n_layers):
        p, w = f"L{i}.", f"layers.{i}."
        add(norm, [x], p + "h_attn", c.d_model, i, norm_weights(w + "attn_norm"))
        add("gemm", [p + "h_attn"], p + "q", c.q_dim, i, gemm_weights(w + "attn.wq", w + "attn.bq"))
        add("gemm", [p + "h_attn"], p + "k", c.kv_dim, i, gemm_weights(w + "attn.wk", w + "attn.bk"))
        add("gemm", [p + "h_attn"], p + "v", c.kv_dim, i, gemm_weights(w + "attn.wv", w + "attn.bv"))
        q, k = p + "q", p + "k"
        if not gpt2:
            add("rope", [q], p + "q_rot", c.q_dim, i)
            add("rope", [k], p + "k_rot", c.kv_dim, i)
            q, k = p + "q_rot", p + "k_rot"
        add("kv_write", [k, p + "v"], p + "kv", 0, i)
        add("attention", [q, p + "kv"], p + "attn", c.q_dim, i)
        add("gemm", [p + "attn"], p + "o", c.d_model, i, gemm_weights(w + "attn.wo", w + "attn.bo"))
        add("residual_add", [x, p + "o"], p + "x_attn", c.d_model, i)
        add(norm, [p + "x_attn"], p + "h_mlp", c.d_model, i, norm_weights(w + "mlp_norm"))
        if gpt2:
            add("gemm", [p + "h_mlp"], p + "up", c.d_ff, i, gemm_weights(w + "mlp.w_up", w + "mlp.b_up"))
            add("activation", [p + "up"], p + "act", c.d_ff, i)
            mid = p + "act"
        else:
            add("gemm", [p + "h_mlp"], p + "gate", c.d_ff, i, [w + "mlp.w_gate"])
            add("gemm", [p + "h_mlp"], p + "up", c.d_ff, i, [w + "mlp.w_up"])
            add("activation", [p + "gate"], p + "act", c.d_ff, i)
            add("multiply", [p + "act", p + "up"], p + "prod", c.d_ff, i)
            mid = p + "prod"
        add("gemm", [mid], p + "down", c.d_model, i, gemm_weights(w + "mlp.w_down", w + "mlp.b_down"))
        add("residual_add", [p + "x_attn", p + "down"], p + "x_out", c.d_model, i)
        x = p + "x_out"
    add(norm, [x], "final", c.d_model, None, norm_weights("final_norm"))
    add("gemm", ["final"], "logits", c.vocab_size, None, ["tok_embed" if c.tie_embeddings else "lm_head"])
    add("argmax", ["logits"], "next_token", 1)
    return ops


def gemm_form(op: Op) -> tuple[bool, bool]:
    """(has a bias, requantized to int8) of a GEMM of :func:`program_structure`, before it is
    quantized: a bias where the structure names one (GPT-2's projections); every GEMM is
    requantized per output channel except the LM head, whose int32 accumulators are the logits."""
    return len(op.weights) > 1, op.output != "logits"


def _head_weight(name: str, weights) -> np.ndarray:
    """The LM head matrix (d_model, vocab): the tied embedding is read transposed."""
    return weights[name].T if name == "tok_embed" else weights[name]


# --------------------------------------------------------------------------------------------------
# The float semantics of the same ops (calibration)
# --------------------------------------------------------------------------------------------------

def run_float(config: ModelConfig, weights: dict[str, np.ndarray], tokens, ops: list[Op] | None = None
              ) -> dict[str, np.ndarray]:
    """Every value of the program in float64 for ``tokens`` at positions 0 .. T-1 (causal).

    The float counterpart of :meth:`golden.int_model.IntModel.run`: each op computes its real
    function (the ``*_ref`` of golden.vector, float attention). Its ``logits`` equal
    :meth:`golden.model.Transformer.forward` within float rounding (tested).
    """
    c = config
    ops = program_structure(c) if ops is None else ops
    toks = np.asarray(tokens, dtype=np.int64).reshape(-1)
    t = toks.shape[0]
    if not 0 < t <= c.max_context:
        raise InputError(f"sequence length must be in 1..{c.max_context}, not {t}")
    if ((toks < 0) | (toks >= c.vocab_size)).any():
        raise InputError(f"token must be in 0..{c.vocab_size - 1}")
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    pos = np.arange(t)
    vals: dict[str, np.ndarray] = {"token": toks[:, None], "position": pos[:, None]}
    act = silu_float if c.family == "llama" else gelu_tanh_float
    causal = pos[None, :] > pos[:, None]
    kv: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for op in ops:
        a = [vals[n] for n in op.inputs]
        if op.op == "embed":
            y = w[op.weights[0]][a[0][:, 0]]
        elif op.op == "rmsnorm":
            y = rmsnorm_ref(a[0], w[op.weights[0]], c.norm_eps)
        elif op.op == "layernorm":
            y = layernorm_ref(a[0], w[op.weights[0]], w[op.weights[1]], c.norm_eps)
        elif op.op == "gemm":
            y = a[0] @ _head_weight(op.weights[0], w)
            if len(op.weights) > 1:
                y = y + w[op.weights[1]]
        elif op.op == "rope":
            y = rope_ref(a[0].reshape(t, -1, c.head_dim), pos[:, None], c.rope_theta).reshape(t, -1)
        elif op.op == "kv_write":
            kv[op.layer] = (a[0].reshape(t, c.n_kv_heads, c.head_dim), a[1].reshape(t, c.n_kv_heads, c.head_dim))
            y = np.zeros((t, 0))
        elif op.op == "attention":
            k, v = kv[op.layer]
            k, v = np.repeat(k, c.group_size, axis=1), np.repeat(v, c.group_size, axis=1)
            q = a[0].reshape(t, c.n_heads, c.head_dim)
            s = np.einsum("thd,shd->hts", q, k) / math.sqrt(c.head_dim)
            s = np.where(causal[None], -np.inf, s)
            pr = np.exp(s - s.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            y = np.einsum("hts,shd->thd", pr, v).reshape(t, -1)
        elif op.op == "residual_add":
            y = a[0] + a[1]
        elif op.op == "activation":
            y = act(a[0])
        elif op.op == "multiply":
            y = a[0] * a[1]
        elif op.op == "argmax":
            y = np.argmax(a[0], axis=-1)[:, None]
        else:  # pragma: no cover - Op checks its name
            raise InputError(op.op)
        vals[op.output] = y
    return vals


# --------------------------------------------------------------------------------------------------
# Calibration data
# --------------------------------------------------------------------------------------------------

def demo_corpus_splits() -> tuple[str, str]:
    """The demo corpus as (calibration text, held-out text): the held-out text is the last 1/20,
    the training script's validation split, and is never used for calibration."""
    text = DEMO_CORPUS.read_text(encoding="utf-8")
    n_val = len(text) // 20
    return text[:-n_val], text[-n_val:]


def text_windows(tokens: Sequence[int], length: int, count: int) -> list[list[int]]:
    """``count`` windows of ``length`` tokens at evenly spaced offsets of ``tokens`` (fewer if short)."""
    tokens = list(tokens)
    if len(tokens) <= length:
        return [tokens] if tokens else []
    starts = np.linspace(0, len(tokens) - length, num=count).astype(int)
    return [tokens[s:s + length] for s in sorted(set(starts.tolist()))]


def random_calibration(config: ModelConfig, *, windows: int = DEFAULT_CALIBRATION_WINDOWS,
                       seed: int = 0, length: int | None = None) -> list[list[int]]:
    """Uniformly random token windows (seeded): the fallback for a checkpoint without sample text.

    Each window has ``length`` tokens, by default the integer model's context
    (``min(max_context, MAX_CONTEXT_LIMIT)``): longer windows reach positions it never runs."""
    length = min(config.max_context, MAX_CONTEXT_LIMIT) if length is None else length
    rng = np.random.default_rng(seed)
    return rng.integers(0, config.vocab_size, size=(windows, length)).tolist()


def calibration_for(checkpoint: Checkpoint, *, windows: int = DEFAULT_CALIBRATION_WINDOWS
                    ) -> tuple[list[list[int]], str]:
    """Default calibration token windows for a checkpoint and a description of their source.

    The demo model and its draft model: the demo corpus without the held-out tail. Others: seeded
    random tokens.
    """
    length = min(checkpoint.config.max_context, 128)
    if demo_corpus_model(checkpoint):
        calib, _ = demo_corpus_splits()
        return (text_windows(checkpoint.tokenizer.encode(calib), length, windows),
                f"demo corpus, {windows} windows of {length} tokens (held-out tail excluded)")
    return random_calibration(checkpoint.config, windows=windows, length=length), \
        f"random tokens, {windows} windows of {length} (seed 0)"


# --------------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------------

def _round_half_up(x) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def quantize_weight(w, *, per_channel: bool = True, clip: str = DEFAULT_WEIGHT_CLIP
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a (K, N) matrix: ``(w_int8, scales)``.

    ``scales`` has one entry per column (``per_channel``) or one for the whole matrix (shape (1,));
    ``w ~= w_int8 * scales``. ``clip`` "absmax" maps each column's largest magnitude to 127;
    "mse" picks, per column, the clipping bound (a fraction 0.5 .. 1 of the absmax) with the least
    squared error. An all-zero column gets scale 1.
    """
    if clip not in WEIGHT_CLIPS:
        raise InputError(f"weight clip must be one of {', '.join(WEIGHT_CLIPS)}, not {clip!r}")
    w = np.asarray(w, dtype=np.float64)
    amax = np.abs(w).max(axis=0) if per_channel else np.array([np.abs(w).max()])
    bound = amax.copy()
    if clip == "mse":
        best = np.full(amax.shape, np.inf)
        for ratio in np.linspace(0.5, 1.0, 26):
            s = np.where(amax > 0, amax * ratio / INT8_MAX, 1.0)
            err = ((np.clip(_round_half_up(w / s), INT8_MIN, INT8_MAX) * s - w) ** 2).sum(axis=0)
            if not per_channel:
                err = np.array([err.sum()])
            better = err < best
            best = np.where(better, err, best)
            bound = np.where(better, amax * ratio, bound)
    scales = np.where(bound > 0, bound / INT8_MAX, 1.0)
    q = np.clip(_round_half_up(w / scales), INT8_MIN, INT8_MAX)
    return q, scales


def _clip_bound(x: np.ndarray, act_clip: str) -> float:
    a = np.abs(x)
    if act_clip == "max":
        return float(a.max(initial=0.0))
    return float(np.percentile(a, float(act_clip[1:])))


def _calibrate(config, weights, ops, calibration, act_clip) -> dict[str, float]:
    if act_clip not in ACT_CLIPS:
        raise InputError(f"activation clip must be one of {', '.join(ACT_CLIPS)}, not {act_clip!r}")
    windows = [list(w) for w in calibration]
    if not windows or not all(windows):
        raise InputError("calibration must hold at least one non-empty token sequence")
    seen: dict[str, list[np.ndarray]] = {}
    for window in windows:
        if len(window) > config.max_context:
            raise InputError(f"calibration sequence length must be at most max_context="
                             f"{config.max_context}, not {len(window)}")
        vals = run_float(config, weights, window, ops)
        for op in ops:
            if op.op not in ("kv_write", "argmax"):
                seen.setdefault(op.output, []).append(vals[op.output].astype(np.float32))
    bounds = {}
    for name, chunks in seen.items():
        bound = _clip_bound(np.concatenate(chunks), act_clip)
        bounds[name] = bound if bound > 0 else 1.0
    return bounds


def _multipliers(factors) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(f)) for f in np.asarray(factors).reshape(-1)]
    return np.array([m for m, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64)


def quantize_model(config: ModelConfig, weights: dict[str, np.ndarray], calibration, *,
                   act_clip: str = DEFAULT_ACT_CLIP, weight_clip: str = DEFAULT_WEIGHT_CLIP,
                   source: str = "caller-supplied tokens") -> IntModel:
    """Quantize a float model into an :class:`~golden.int_model.IntModel`.

    ``calibration`` is a sequence of token sequences (each at most ``max_context`` long) that the
    float model runs to set the activation scales; ``source`` describes them (kept in ``info``).
    Raises ValueError for weights that do not match the config, empty calibration data or an
    unknown clipping method.
    """
    check_weights(config, weights)
    c = config
    ops = program_structure(c)
    bounds = _calibrate(c, weights, ops, calibration, act_clip)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    scales: dict[str, float] = {}

    # Tables read by "embed": one scale per table; the tied embedding doubles as the LM head.
    tok_q, tok_s = quantize_weight(w["tok_embed"].T, per_channel=False, clip=weight_clip)
    tables = {"tok_embed": (tok_q.T, float(tok_s[0]))}
    if c.family == "gpt2":
        pq, ps = quantize_weight(w["pos_embed"].T, per_channel=False, clip=weight_clip)
        tables["pos_embed"] = (pq.T, float(ps[0]))

    def scale_of(name):
        return scales[name]

    out_ops: list[Op] = []
    logit_scale = None
    for op in ops:
        params = None
        name = op.output
        if op.op == "embed":
            table, s = tables[op.weights[0]]
            scales[name] = s
            params = EmbedParams(table=table, index=op.inputs[0])
        elif op.op == "argmax":
            params = None
        elif op.op == "kv_write":
            params = KVWriteParams(layer=op.layer)
        else:
            if name in bounds and name != "logits":
                scales[name] = bounds[name] / INT8_MAX
            s_out = scales.get(name)
            if op.op in ("rmsnorm", "layernorm"):
                s_in = scale_of(op.inputs[0])
                if op.op == "rmsnorm":
                    params = NormParams.rms(w[op.weights[0]], x_scale=s_in, out_scale=s_out, eps=c.norm_eps)
                else:
                    params = NormParams.layer(w[op.weights[0]], w[op.weights[1]], x_scale=s_in,
                                              out_scale=s_out, eps=c.norm_eps)
            elif op.op == "gemm":
                s_in = scale_of(op.inputs[0])
                has_bias, requantized = gemm_form(op)
                if not requantized:
                    if op.weights[0] == "tok_embed":
                        wq, ws = tables["tok_embed"][0].T, tables["tok_embed"][1]
                    else:
                        wq, wsa = quantize_weight(w[op.weights[0]], per_channel=False, clip=weight_clip)
                        ws = float(wsa[0])
                    logit_scale = s_in * ws
                    params = GemmParams(weight=wq)
                else:
                    wq, ws = quantize_weight(w[op.weights[0]], per_channel=True, clip=weight_clip)
                    bias = None
                    if has_bias:
                        bias = _round_half_up(w[op.weights[1]] / (s_in * ws))
                        if (np.abs(bias) >= (1 << 31)).any():
                            raise InputError(f"bias {op.weights[1]!r} does not fit int32 at its accumulator scale")
                    mult, shift = _multipliers(s_in * ws / s_out)
                    params = GemmParams(weight=wq, bias=bias, mult=mult, shift=shift)
            elif op.op == "rope":
                m, sh = rope_multiplier(x_scale=scale_of(op.inputs[0]), out_scale=s_out)
                heads = op.width // c.head_dim
                # The table covers the positions the integer model runs (its KV cache's length).
                params = RopeParams(heads=heads, head_dim=c.head_dim, mult=m, shift=sh,
                                    max_context=min(c.max_context, MAX_CONTEXT_LIMIT), base=c.rope_theta)
            elif op.op == "attention":
                layer = op.layer
                k_name = f"L{layer}.k_rot" if c.family == "llama" else f"L{layer}.k"
                attn = AttentionParams.from_scales(q_scale=scale_of(op.inputs[0]), k_scale=scale_of(k_name),
                                                   v_scale=scale_of(f"L{layer}.v"), out_scale=s_out,
                                                   head_dim=c.head_dim)
                params = AttentionOpParams(layer=layer, attn=attn)
            elif op.op == "residual_add":
                params = AddParams.from_scales(a_scale=scale_of(op.inputs[0]), b_scale=scale_of(op.inputs[1]),
                                               out_scale=s_out)
            elif op.op == "activation":
                kind = "silu" if c.family == "llama" else "gelu_tanh"
                params = ActivationParams(kind=kind, table=activation_table(kind, scale_of(op.inputs[0]), s_out))
            elif op.op == "multiply":
                m, sh = multiply_multiplier(a_scale=scale_of(op.inputs[0]), b_scale=scale_of(op.inputs[1]),
                                            out_scale=s_out)
                params = MultiplyParams(mult=m, shift=sh)
        out_ops.append(Op(op=op.op, inputs=op.inputs, output=op.output, width=op.width, layer=op.layer,
                          weights=op.weights, params=params))
    info = {"calibration": source, "calibration_tokens": int(sum(len(x) for x in calibration)),
            "act_clip": act_clip, "weight_clip": weight_clip}
    return IntModel(config=c, program=tuple(out_ops), scales=scales, logit_scale=float(logit_scale), info=info)


def quantize_checkpoint(checkpoint: Checkpoint, calibration=None, **kwargs) -> IntModel:
    """Quantize an imported checkpoint with its default calibration (:func:`calibration_for`)
    unless token sequences are given."""
    if calibration is None:
        calibration, source = calibration_for(checkpoint)
        kwargs.setdefault("source", source)
    return quantize_model(checkpoint.config, checkpoint.weights, calibration, **kwargs)


# --------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------

def weight_bytes(config: ModelConfig) -> dict[str, int]:
    """Bytes of the quantized model, from the sizes alone (no quantization needed).

    * ``int8_weight_bytes``: every int8 table (embeddings, GEMM weights, LM head unless tied, norm
      gammas), one byte each.
    * ``int32_bytes``: GEMM biases and LayerNorm betas, four bytes each.
    * ``requant_bytes``: per-output-channel multiplier (u15) and shift (6 bits), stored as 3 bytes
      per channel, for every requantized GEMM output channel.
    * ``streamed_bytes_per_token``: what one decode step reads: every GEMM weight, bias and
      requantization constant, the LM head (the whole embedding when tied), the norm constants,
      one embedding row (and one position row for GPT-2).
    * ``kv_bytes_per_token``: int8 K and V of one position in every layer.
    """
    c = config
    gpt2 = c.family == "gpt2"
    d = c.d_model
    mats = c.d_model * (c.q_dim + 2 * c.kv_dim) + c.q_dim * d + (2 if gpt2 else 3) * d * c.d_ff
    mat_channels = c.q_dim + 2 * c.kv_dim + d + (1 if gpt2 else 2) * c.d_ff + d
    biases = mat_channels if gpt2 else 0
    n_norms = 2 * c.n_layers + 1
    gammas = n_norms * d
    betas = n_norms * d if gpt2 else 0
    head = d * c.vocab_size
    tables = c.vocab_size * d + (c.max_context * d if gpt2 else 0)
    int8 = c.n_layers * mats + gammas + tables + (0 if c.tie_embeddings else head)
    int32 = 4 * (c.n_layers * biases + betas)
    requant = 3 * c.n_layers * mat_channels
    streamed = c.n_layers * mats + gammas + head + d * (2 if gpt2 else 1) + int32 + requant
    return {"int8_weight_bytes": int8, "int32_bytes": int32, "requant_bytes": requant,
            "streamed_bytes_per_token": streamed,
            "kv_bytes_per_token": 2 * c.n_layers * c.n_kv_heads * c.head_dim}


_FUNCTION = {
    "embed": "`table[index]` (int8 row read)", "rmsnorm": "`vector.rmsnorm`", "layernorm": "`vector.layernorm`",
    "rope": "`vector.rope`", "kv_write": "cache store (int8 rows)", "attention": "`attention.attention_decode`",
    "residual_add": "`vector.residual_add`", "activation": "`vector.activation` (256-entry table)",
    "multiply": "`vector.multiply`", "argmax": "`vector.argmax`",
}


def program_table(config: ModelConfig) -> str:
    """The integer program of ``config`` as a markdown table: the ops before the layers, layer 0
    (every layer is the same with its own constants) and the ops after, with their shapes."""
    from golden.int_model import PRIMITIVES

    c = config
    widths = {"token": 1, "position": 1}
    lines = ["| # | layer | op | inputs -> output | per-token shapes | golden function | unit |",
             "|---|---|---|---|---|---|---|"]
    for n, op in enumerate(program_structure(c)):
        widths[op.output] = op.width
        if op.layer not in (None, 0):
            continue
        ins = ", ".join(f"{i}" for i in op.inputs)
        shape = " x ".join(f"{widths[i]}" for i in op.inputs) + f" -> {op.width}"
        if op.op == "gemm":
            k = widths[op.inputs[0]]
            bias = " + bias int32" if len(op.weights) > 1 else ""
            if op.output == "logits":
                func = "`numerics.gemm_int8`, int32 out (per-tensor weight scale)"
            else:
                func = f"`numerics.gemm_int8`{bias}, `numerics.requantize` per channel"
            shape = f"1x{k} @ {k}x{op.width} -> {op.width}"
        elif op.op == "embed":
            table = c.vocab_size if op.inputs[0] == "token" else c.max_context
            func, shape = _FUNCTION["embed"], f"{table}x{op.width} table -> {op.width}"
        elif op.op == "rope":
            func, shape = _FUNCTION["rope"], f"{op.width // c.head_dim}x{c.head_dim} -> same"
        elif op.op == "kv_write":
            func, shape = _FUNCTION["kv_write"], f"2 x {c.n_kv_heads}x{c.head_dim} -> cache row"
        elif op.op == "attention":
            func = _FUNCTION["attention"]
            shape = f"{c.n_heads}x{c.head_dim}, cache (pos+1)x{c.n_kv_heads}x{c.head_dim} -> {op.width}"
        else:
            func = _FUNCTION[op.op]
        layer = "-" if op.layer is None else "each"
        lines.append(f"| {n} | {layer} | `{op.op}` | {ins} -> {op.output} | {shape} | {func} | "
                     f"{PRIMITIVES[op.op]} |")
    return "\n".join(lines) + "\n"
