"""The integer model: one decode step exactly as the hardware computes it, as an ordered op list.

A quantized model (:func:`golden.quantize.quantize_model`) is an :class:`IntModel`: the model's
sizes, an *integer program* -- a tuple of :class:`Op`, in execution order -- and the real scale of
every int8 value (documentation and dequantization only; no float enters the integer path). The
forward pass does nothing but walk the program and call, for each op, the golden primitive it
names. A compiler walks the same list and maps each op to a hardware unit.

Primitives (``Op.op``) and the golden function each one is
--------------------------------------------------------------
==================  =================================================================  =========
op                  integer semantics                                                  unit
==================  =================================================================  =========
``embed``           ``table[index]``: read one int8 row (index = token or position)    memory
``rmsnorm``         :func:`golden.vector.rmsnorm` with :class:`~golden.vector.NormParams`  vector
``layernorm``       :func:`golden.vector.layernorm`                                    vector
``gemm``            ``requantize(wrap32(bias + gemm_int8(x, W)), mult[c], shift[c])``  array
                    (per output channel ``c``); ``bias`` int32 or absent (the
                    accumulator's preload); without mult/shift the int32 accumulators
                    are the output (the LM head's logits)
``rope``            :func:`golden.vector.rope` on every head at the token's position   vector
``kv_write``        store int8 K (after RoPE) and V rows at the position in the cache  memory
``attention``       :func:`golden.attention.attention_decode` over cache rows 0..pos   attention
``residual_add``    :func:`golden.vector.residual_add` with :class:`~golden.vector.AddParams`  vector
``activation``      :func:`golden.vector.activation`: ``table[x + 128]`` (SiLU, GELU)  vector
``multiply``        :func:`golden.vector.multiply` (the SwiGLU gate)                   vector
``argmax``          :func:`golden.vector.argmax` over the int32 logits                 vector
==================  =================================================================  =========

Every int32 -> int8 step is :func:`golden.numerics.requantize`. The GEMM bias is the only
arithmetic not inside a golden vector/attention function: an int32 added to the accumulator
before requantization (the accumulator starts at the bias instead of 0), wrapping like the
32-bit adder it is.

Values are named strings (``"L0.q"``); every value is an int64 array of shape (T, width) for T
positions processed together. Processing T positions at once (teacher forcing, a prompt) gives
bit for bit what T single decode steps give: every op is row-wise except ``attention``, which
sees for row t exactly the cache rows 0 .. start + t, as the t-th decode step would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from golden.attention import MAX_CONTEXT_LIMIT, AttentionParams, attention_decode
from golden.greedy import check_prompt
from golden.model import ModelConfig, check_temperature, sample_next
from golden.numerics import (
    MULT_MAX,
    SHIFT_MAX,
    check_int8,
    check_int_array,
    gemm_int8,
    requantize,
    wrap_int32,
)
from golden.vector import activation, argmax, layernorm, multiply, residual_add, rmsnorm, rope

from .errors import InputError

__all__ = [
    "PRIMITIVES", "ActivationParams", "AttentionOpParams", "EmbedParams", "GemmParams", "IntKVCache", "IntModel",
    "KVWriteParams", "MultiplyParams", "Op", "RopeParams", "generate_int",
]

#: Every primitive an integer program may use, with the hardware unit that computes it.
PRIMITIVES = {
    "embed": "memory", "rmsnorm": "vector", "layernorm": "vector", "gemm": "array",
    "rope": "vector", "kv_write": "memory", "attention": "attention", "residual_add": "vector",
    "activation": "vector", "multiply": "vector", "argmax": "vector",
}


# --------------------------------------------------------------------------------------------------
# Parameters of the primitives that golden does not already define
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, eq=False)
class EmbedParams:
    """An int8 table (rows, width); ``index`` is "token" or "position"."""

    table: np.ndarray
    index: str

    def __post_init__(self):
        table = check_int8("embedding table", self.table)
        if table.ndim != 2:
            raise InputError(f"embedding table must be 2-D, not shape {table.shape}")
        if self.index not in ("token", "position"):
            raise InputError(f"embedding index must be 'token' or 'position', not {self.index!r}")
        object.__setattr__(self, "table", table)


@dataclass(frozen=True, kw_only=True, eq=False)
class GemmParams:
    """int8 weight (K, N), optional int32 bias (N,), per-channel mult (N,) / shift (N,) or None.

    With ``mult``/``shift`` None the op outputs the int32 accumulators (the LM head).
    """

    weight: np.ndarray
    bias: np.ndarray | None = None
    mult: np.ndarray | None = None
    shift: np.ndarray | None = None

    def __post_init__(self):
        w = check_int8("gemm weight", self.weight)
        if w.ndim != 2:
            raise InputError(f"gemm weight must be 2-D, not shape {w.shape}")
        object.__setattr__(self, "weight", w)
        n = w.shape[1]
        if self.bias is not None:
            b = np.asarray(self.bias)
            if b.dtype.kind not in "iu" or b.shape != (n,):
                raise InputError(f"gemm bias must be {n} integers, not {b.dtype} of shape {b.shape}")
            b = check_int_array("gemm bias", b, -(1 << 31) + 1, (1 << 31) - 1, rule="hold int32 values")
            object.__setattr__(self, "bias", b)
        if (self.mult is None) != (self.shift is None):
            raise InputError("gemm mult and shift must both be given or both be None")
        if self.mult is not None:
            for name, arr, high in (("mult", self.mult, MULT_MAX), ("shift", self.shift, SHIFT_MAX)):
                a = np.asarray(arr)
                if a.dtype.kind not in "iu" or a.shape != (n,):
                    raise InputError(f"gemm {name} must be {n} integers, not {a.dtype} of shape {a.shape}")
                object.__setattr__(self, name, check_int_array(f"gemm {name}", a, 0, high,
                                                               rule=f"be in [0, {high}]"))

    @property
    def requantized(self) -> bool:
        return self.mult is not None


@dataclass(frozen=True, kw_only=True)
class RopeParams:
    """RoPE over ``heads`` heads of ``head_dim`` lanes: one (mult, shift), the table size and base."""

    heads: int
    head_dim: int
    mult: int
    shift: int
    max_context: int
    base: float


@dataclass(frozen=True, kw_only=True)
class KVWriteParams:
    """Which layer's cache the K and V rows go to."""

    layer: int


@dataclass(frozen=True, kw_only=True, eq=False)
class ActivationParams:
    """A 256-entry int8 table and the function it holds ("silu", "gelu_tanh")."""

    kind: str
    table: np.ndarray

    def __post_init__(self):
        table = check_int8("activation table", self.table)
        if table.shape != (256,):
            raise InputError(f"activation table must have 256 entries, not shape {table.shape}")
        object.__setattr__(self, "table", table)


@dataclass(frozen=True, kw_only=True)
class MultiplyParams:
    mult: int
    shift: int


@dataclass(frozen=True, kw_only=True)
class AttentionOpParams:
    """The attention unit's registers for one layer, and which cache it reads."""

    layer: int
    attn: AttentionParams


# --------------------------------------------------------------------------------------------------
# The program
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, eq=False)
class Op:
    """One step of the integer program.

    ``op`` names the primitive (a key of :data:`PRIMITIVES`), ``inputs`` and ``output`` name values,
    ``layer`` is the transformer layer (None outside the layers), ``width`` the output's width per
    position, ``weights`` the float weights it was quantized from, ``params`` the integer constants
    (None in the unquantized structure that calibration walks).
    """

    op: str
    inputs: tuple[str, ...]
    output: str
    width: int
    layer: int | None = None
    weights: tuple[str, ...] = ()
    params: object = None

    def __post_init__(self):
        if self.op not in PRIMITIVES:
            raise InputError(f"op must be one of {', '.join(PRIMITIVES)}, not {self.op!r}")


@dataclass
class IntKVCache:
    """int8 keys (after RoPE) and values: ``k``, ``v`` of shape (n_layers, max_context, n_kv_heads,
    head_dim), position-major as the attention unit streams them; rows 0 .. length-1 are valid."""

    k: np.ndarray
    v: np.ndarray
    length: int = 0


@dataclass(eq=False)
class IntModel:
    """A quantized model: sizes, the integer program, and the real scale of every value.

    ``scales[name]`` is the real value of one integer step of value ``name`` (int8 values);
    ``logit_scale`` that of the int32 logits. ``max_context`` is the model's context, capped at
    the attention unit's limit (:data:`golden.attention.MAX_CONTEXT_LIMIT`). ``info`` records how
    the model was quantized (calibration source, clipping).
    """

    config: ModelConfig
    program: tuple[Op, ...]
    scales: dict[str, float]
    logit_scale: float
    info: dict = field(default_factory=dict)

    @property
    def max_context(self) -> int:
        return min(self.config.max_context, MAX_CONTEXT_LIMIT)

    def layer_ops(self, layer: int | None) -> list[Op]:
        """The ops of one layer (None: the ops before and after the layers)."""
        return [op for op in self.program if op.layer == layer]

    def new_cache(self) -> IntKVCache:
        c = self.config
        shape = (c.n_layers, self.max_context, c.n_kv_heads, c.head_dim)
        return IntKVCache(np.zeros(shape, np.int64), np.zeros(shape, np.int64))

    def run(self, tokens: Sequence[int] | np.ndarray, cache: IntKVCache) -> dict[str, np.ndarray]:
        """Execute the program for ``tokens`` at positions ``cache.length ..``; return every value.

        Appends the tokens' keys and values to ``cache``. Raises ValueError for a token outside
        the vocabulary or when the tokens do not fit the cache.
        """
        c = self.config
        toks = np.asarray(tokens, dtype=np.int64).reshape(-1)
        start, t = cache.length, toks.shape[0]
        if t == 0:
            raise InputError("tokens must hold at least one token")
        if start + t > self.max_context:
            raise InputError(f"context is full: positions {start}..{start + t - 1} do not fit "
                             f"max_context={self.max_context}")
        bad = (toks < 0) | (toks >= c.vocab_size)
        if bad.any():
            raise InputError(f"token must be in 0..{c.vocab_size - 1}, not {int(toks[bad][0])}")
        positions = np.arange(start, start + t)
        values: dict[str, np.ndarray] = {"token": toks[:, None], "position": positions[:, None]}
        for op in self.program:
            values[op.output] = _execute(op, [values[n] for n in op.inputs], positions, cache)
        cache.length = start + t
        return values

    def forward(self, tokens: Sequence[int] | np.ndarray, cache: IntKVCache | None = None) -> np.ndarray:
        """int32 logits (T, vocab_size) of every token (a fresh cache unless one is given)."""
        values = self.run(tokens, self.new_cache() if cache is None else cache)
        return values["logits"]

    def step(self, token: int, cache: IntKVCache) -> np.ndarray:
        """One decode step at position ``cache.length``: int32 logits (vocab_size,)."""
        return self.forward([int(token)], cache)[0]

    def dequantize_logits(self, logits) -> np.ndarray:
        """Real logits: the int32 logits times ``logit_scale`` (float64)."""
        return np.asarray(logits, dtype=np.float64) * self.logit_scale


def _execute(op: Op, args: list[np.ndarray], positions: np.ndarray, cache: IntKVCache) -> np.ndarray:
    p = op.params
    kind = op.op
    if kind == "embed":
        return p.table[args[0][:, 0]]
    if kind == "rmsnorm":
        return rmsnorm(args[0], p)
    if kind == "layernorm":
        return layernorm(args[0], p)
    if kind == "gemm":
        acc = gemm_int8(args[0], p.weight)
        if p.bias is not None:
            acc = wrap_int32(acc + p.bias)       # the accumulator's preload
        return requantize(acc, p.mult, p.shift) if p.requantized else acc
    if kind == "rope":
        x = args[0].reshape(len(positions), p.heads, p.head_dim)
        y = rope(x, positions[:, None], mult=p.mult, shift=p.shift, max_context=p.max_context, base=p.base)
        return y.reshape(len(positions), -1)
    if kind == "kv_write":
        k, v = args
        rows = slice(int(positions[0]), int(positions[-1]) + 1)
        n_kv, hd = cache.k.shape[2], cache.k.shape[3]
        cache.k[p.layer, rows] = check_int8("k", k).reshape(-1, n_kv, hd)
        cache.v[p.layer, rows] = check_int8("v", v).reshape(-1, n_kv, hd)
        return np.zeros((len(positions), 0), np.int64)
    if kind == "attention":
        q = args[0]
        hd = cache.k.shape[3]
        out = np.empty((len(positions), q.shape[1]), np.int64)
        for row, pos in enumerate(positions):
            kv = slice(0, int(pos) + 1)
            out[row] = attention_decode(q[row].reshape(-1, hd), cache.k[p.layer, kv], cache.v[p.layer, kv],
                                        p.attn, max_context=cache.k.shape[1]).reshape(-1)
        return out
    if kind == "residual_add":
        return residual_add(args[0], args[1], p)
    if kind == "activation":
        return activation(args[0], p.table)
    if kind == "multiply":
        return multiply(args[0], args[1], mult=p.mult, shift=p.shift)
    if kind == "argmax":
        return argmax(args[0])[:, None]
    raise InputError(f"unknown op {kind!r}")  # pragma: no cover - Op checks its name


def generate_int(model: IntModel, prompt: Sequence[int], max_new_tokens: int, *,
                 temperature: float = 0.0, top_k: int | None = None, seed: int = 0) -> list[int]:
    """Decode like :func:`golden.model.generate`, on the integer model.

    Greedy (temperature 0) takes the program's ``argmax`` output, the token the chip computes.
    Sampling (temperature > 0) is the host's job: it samples from the dequantized logits with
    :func:`golden.model.sample_next` and ``numpy.random.default_rng(seed)``.
    """
    prompt = check_prompt(prompt, max_new_tokens, model.max_context, model.config.vocab_size)
    temperature = check_temperature(temperature)
    rng = np.random.default_rng(seed)
    cache = model.new_cache()
    logits_name, token_name = "logits", "next_token"
    values = model.run(prompt, cache)
    out: list[int] = []
    for n in range(max_new_tokens):
        if temperature == 0:
            tok = int(values[token_name][-1, 0])
        else:
            tok = sample_next(model.dequantize_logits(values[logits_name][-1]), rng,
                              temperature=temperature, top_k=top_k)
        out.append(tok)
        if n + 1 < max_new_tokens:
            values = model.run([tok], cache)
    return out
