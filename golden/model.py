"""The float reference transformer: decoder-only, GPT-2 and Llama families, pure NumPy.

This is the model that the integer golden model and the hardware are measured against. It
computes in float32 by default (float64 on request, with exact RoPE angles) and matches Hugging
Face transformers within float32's rounding bound on the logits (tests/golden/test_model_parity.py;
measured figures in docs/models.md).

Families
--------
* ``"gpt2"``: LayerNorm (with bias), learned absolute positions, multi-head attention with
  biases, GELU with the tanh approximation ("gelu_new"), a two-matrix MLP with biases.
* ``"llama"``: RMSNorm (weight only), rotary position embedding (RoPE, rotate-half convention,
  base ``rope_theta``), grouped-query attention without biases, a SwiGLU MLP
  (``down(silu(gate(x)) * up(x))``).

Both are pre-norm: ``x += attn(norm1(x)); x += mlp(norm2(x))``, then a final norm and the
language-model head. With ``tie_embeddings`` the head is the transposed token embedding.

Weights
-------
A plain ``dict[str, np.ndarray]``. Every matrix is stored in ``(in_features, out_features)``
orientation, so a layer is ``y = x @ W (+ b)``. ``weight_shapes(config)`` lists every name with
its shape; the names are (``{i}`` is the layer index, 0-based)::

    tok_embed                      (vocab_size, d_model)
    pos_embed                      (max_context, d_model)          gpt2 only
    layers.{i}.attn_norm.weight    (d_model,)
    layers.{i}.attn_norm.bias      (d_model,)                      gpt2 only
    layers.{i}.attn.wq             (d_model, n_heads * head_dim)
    layers.{i}.attn.wk             (d_model, n_kv_heads * head_dim)
    layers.{i}.attn.wv             (d_model, n_kv_heads * head_dim)
    layers.{i}.attn.wo             (n_heads * head_dim, d_model)
    layers.{i}.attn.bq / bk / bv / bo  (matching output widths)    gpt2 only
    layers.{i}.mlp_norm.weight     (d_model,)
    layers.{i}.mlp_norm.bias       (d_model,)                      gpt2 only
    layers.{i}.mlp.w_gate          (d_model, d_ff)                 llama only
    layers.{i}.mlp.w_up            (d_model, d_ff)
    layers.{i}.mlp.w_down          (d_ff, d_model)
    layers.{i}.mlp.b_up            (d_ff,)                         gpt2 only
    layers.{i}.mlp.b_down          (d_model,)                      gpt2 only
    final_norm.weight              (d_model,)
    final_norm.bias                (d_model,)                      gpt2 only
    lm_head                        (d_model, vocab_size)           only when not tied

Query head ``h`` uses key/value head ``h // (n_heads // n_kv_heads)``; head ``h`` occupies
columns ``h * head_dim : (h + 1) * head_dim`` of ``wq`` (and likewise for ``wk``/``wv``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from golden.numerics import is_int, is_real

from .errors import InputError, InputTypeError
from .greedy import check_prompt

__all__ = [
    "FAMILIES", "MAX_CONTEXT", "MAX_LAYERS", "KVCache", "ModelConfig", "Transformer", "check_temperature",
    "check_weights", "draw", "generate", "init_weights", "sample_next", "sampling_probs", "weight_shapes",
]

FAMILIES = ("gpt2", "llama")

_POSITIVE_INTS = (
    "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "max_context",
)
#: Longest context a configuration may declare: 2**20 positions, 8x Llama 3.1's 131,072. The KV
#: cache is sized by it (zeroed pages, touched only as positions fill), so a declared context of
#: 1e12 is refused here rather than failing inside NumPy.
MAX_CONTEXT = 1 << 20
#: Most layers a configuration may declare (the largest released models have ~130): per-layer
#: tables are built by loops over the layers.
MAX_LAYERS = 1024
_LIMITS = {"max_context": MAX_CONTEXT, "n_layers": MAX_LAYERS}


def _check_positive_int(name: str, value) -> int:
    if not is_int(value):
        raise InputTypeError(f"{name} must be an integer, not {value!r}")
    if value <= 0:
        raise InputError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _check_positive_float(name: str, value) -> float:
    if not is_real(value):
        raise InputTypeError(f"{name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive finite number, not {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Every size of a decoder-only transformer, checked when it is built.

    Raises TypeError for a field of the wrong kind and ValueError for a bad value or a bad
    combination; the message names the field(s) and shows the value(s). Integer fields accept
    Python or NumPy integers and are stored as ``int``. ``max_context`` is at most MAX_CONTEXT
    (2**20) and ``n_layers`` at most MAX_LAYERS (1024).

    ``n_kv_heads`` must divide ``n_heads`` (grouped-query attention); GPT-2 needs
    ``n_kv_heads == n_heads`` and ``n_heads * head_dim == d_model``; Llama needs an even
    ``head_dim`` (RoPE rotates pairs). ``rope_theta`` is ignored by GPT-2.
    """

    family: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    max_context: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.family, str):
            raise InputTypeError(f"family must be a string, not {self.family!r}")
        if self.family not in FAMILIES:
            raise InputError(f"family must be one of {', '.join(map(repr, FAMILIES))}, not {self.family!r}")
        for name in _POSITIVE_INTS:
            object.__setattr__(self, name, _check_positive_int(name, getattr(self, name)))
            if name in _LIMITS and getattr(self, name) > _LIMITS[name]:
                raise InputError(f"{name} must be at most {_LIMITS[name]:,}, not {getattr(self, name)}")
        for name in ("norm_eps", "rope_theta"):
            object.__setattr__(self, name, _check_positive_float(name, getattr(self, name)))
        if not isinstance(self.tie_embeddings, bool | np.bool_):
            raise InputTypeError(f"tie_embeddings must be a bool, not {self.tie_embeddings!r}")
        object.__setattr__(self, "tie_embeddings", bool(self.tie_embeddings))
        if self.n_heads % self.n_kv_heads:
            raise InputError(
                f"n_heads must be a multiple of n_kv_heads, "
                f"not n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}")
        if self.family == "gpt2":
            if self.n_kv_heads != self.n_heads:
                raise InputError(
                    f"gpt2 needs n_kv_heads == n_heads, "
                    f"not n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}")
            if self.n_heads * self.head_dim != self.d_model:
                raise InputError(
                    f"gpt2 needs n_heads * head_dim == d_model, not n_heads={self.n_heads}, "
                    f"head_dim={self.head_dim}, d_model={self.d_model}")
        elif self.head_dim % 2:
            raise InputError(f"llama needs an even head_dim for RoPE, not head_dim={self.head_dim}")

    @property
    def q_dim(self) -> int:
        """Width of all query heads together: ``n_heads * head_dim``."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of all key (or value) heads together: ``n_kv_heads * head_dim``."""
        return self.n_kv_heads * self.head_dim

    @property
    def group_size(self) -> int:
        """Query heads sharing one key/value head: ``n_heads // n_kv_heads``."""
        return self.n_heads // self.n_kv_heads

    def n_params(self) -> int:
        """Number of weight elements (``sum`` of the sizes in ``weight_shapes``)."""
        return sum(math.prod(s) for s in weight_shapes(self).values())


def weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight name of ``config`` with its shape, in a fixed order (see the module docstring)."""
    c = config
    gpt2 = c.family == "gpt2"
    shapes: dict[str, tuple[int, ...]] = {"tok_embed": (c.vocab_size, c.d_model)}
    if gpt2:
        shapes["pos_embed"] = (c.max_context, c.d_model)
    for i in range(c.n_layers):
        p = f"layers.{i}."
        shapes[p + "attn_norm.weight"] = (c.d_model,)
        if gpt2:
            shapes[p + "attn_norm.bias"] = (c.d_model,)
        shapes[p + "attn.wq"] = (c.d_model, c.q_dim)
        shapes[p + "attn.wk"] = (c.d_model, c.kv_dim)
        shapes[p + "attn.wv"] = (c.d_model, c.kv_dim)
        shapes[p + "attn.wo"] = (c.q_dim, c.d_model)
        if gpt2:
            shapes[p + "attn.bq"] = (c.q_dim,)
            shapes[p + "attn.bk"] = (c.kv_dim,)
            shapes[p + "attn.bv"] = (c.kv_dim,)
            shapes[p + "attn.bo"] = (c.d_model,)
        shapes[p + "mlp_norm.weight"] = (c.d_model,)
        if gpt2:
            shapes[p + "mlp_norm.bias"] = (c.d_model,)
        else:
            shapes[p + "mlp.w_gate"] = (c.d_model, c.d_ff)
        shapes[p + "mlp.w_up"] = (c.d_model, c.d_ff)
        shapes[p + "mlp.w_down"] = (c.d_ff, c.d_model)
        if gpt2:
            shapes[p + "mlp.b_up"] = (c.d_ff,)
            shapes[p + "mlp.b_down"] = (c.d_model,)
    shapes["final_norm.weight"] = (c.d_model,)
    if gpt2:
        shapes["final_norm.bias"] = (c.d_model,)
    if not c.tie_embeddings:
        shapes["lm_head"] = (c.d_model, c.vocab_size)
    return shapes


def init_weights(config: ModelConfig, *, seed: int = 0, std: float = 0.02) -> dict[str, np.ndarray]:
    """Random float32 weights for ``config``: norm weights 1, biases 0, matrices N(0, std^2)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in weight_shapes(config).items():
        if name.endswith("norm.weight"):
            out[name] = np.ones(shape, np.float32)
        elif len(shape) == 1:
            out[name] = np.zeros(shape, np.float32)
        else:
            out[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    return out


def check_weights(config: ModelConfig, weights: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless ``weights`` has exactly the names and shapes of ``weight_shapes``."""
    expected = weight_shapes(config)
    missing = [n for n in expected if n not in weights]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"missing weight {missing[0]!r}{more}")
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise InputError(f"unexpected weight {extra[0]!r}")
    for name, shape in expected.items():
        got = tuple(np.shape(weights[name]))
        if got != shape:
            raise InputError(f"weight {name!r} has shape {got}, expected {shape}")


@dataclass
class KVCache:
    """Keys and values of every past position, per layer and key/value head.

    ``k`` and ``v`` have shape ``(n_layers, n_kv_heads, max_context, head_dim)``; positions
    ``0 .. length-1`` are valid. Keys are stored after RoPE (Llama), as the hardware stores them.
    """

    k: np.ndarray
    v: np.ndarray
    length: int = 0

    @classmethod
    def empty(cls, config: ModelConfig, dtype=np.float32) -> KVCache:
        shape = (config.n_layers, config.n_kv_heads, config.max_context, config.head_dim)
        return cls(np.zeros(shape, dtype), np.zeros(shape, dtype))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@dataclass(eq=False)
class Transformer:
    """A decoder-only transformer with fixed weights.

    ``weights`` must match ``weight_shapes(config)`` exactly (ValueError otherwise); they are
    converted to ``dtype`` (float32 by default), which is the dtype of every computation.
    """

    config: ModelConfig
    weights: dict[str, np.ndarray]
    dtype: type = np.float32
    _inv_freq: np.ndarray | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.config, ModelConfig):
            raise InputTypeError(f"config must be a ModelConfig, not {type(self.config).__name__}")
        check_weights(self.config, self.weights)
        self.weights = {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in self.weights.items()}
        if self.config.family == "llama":
            c = self.config
            self._inv_freq = 1.0 / (c.rope_theta ** (np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim))

    def _rope(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin (T, head_dim) of the RoPE angles of ``positions``, computed for those
        positions only (no table of max_context rows). The angles are float64 products, rounded
        to the model's dtype before cos and sin: float32 angles, as transformers' are, in the
        float32 model; exact ones in the float64 model, the reference."""
        angles = positions.astype(np.float64)[:, None] * self._inv_freq[None, :]
        angles = np.concatenate([angles, angles], axis=-1).astype(self.dtype)
        return np.cos(angles), np.sin(angles)

    # -- building blocks, each over a (T, ...) batch of positions ---------------------------

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        w = self.weights
        if self.config.family == "gpt2":
            return _layer_norm(x, w[name + ".weight"], w[name + ".bias"], self.config.norm_eps)
        return _rms_norm(x, w[name + ".weight"], self.config.norm_eps)

    def _apply_rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rotate ``x`` of shape (T, heads, head_dim) by its positions (rotate-half convention)."""
        cos, sin = self._rope(positions)
        cos, sin = cos[:, None, :], sin[:, None, :]
        half = x.shape[-1] // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated * sin

    def _qkv(self, i: int, h: np.ndarray, positions: np.ndarray):
        c, w, p = self.config, self.weights, f"layers.{i}.attn."
        q, k, v = h @ w[p + "wq"], h @ w[p + "wk"], h @ w[p + "wv"]
        if c.family == "gpt2":
            q, k, v = q + w[p + "bq"], k + w[p + "bk"], v + w[p + "bv"]
        t = h.shape[0]
        q = q.reshape(t, c.n_heads, c.head_dim)
        k = k.reshape(t, c.n_kv_heads, c.head_dim)
        v = v.reshape(t, c.n_kv_heads, c.head_dim)
        if c.family == "llama":
            q, k = self._apply_rope(q, positions), self._apply_rope(k, positions)
        return q, k, v

    def _attend(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, q_pos: np.ndarray) -> np.ndarray:
        """q: (T, n_heads, hd); k, v: (n_kv_heads, S, hd) for key positions 0..S-1 -> (T, q_dim)."""
        c = self.config
        t = q.shape[0]
        qg = q.reshape(t, c.n_kv_heads, c.group_size, c.head_dim)
        scores = np.einsum("tkgd,ksd->tkgs", qg, k) * self.dtype(1.0 / math.sqrt(c.head_dim))
        causal = np.arange(k.shape[1])[None, :] > q_pos[:, None]
        scores = np.where(causal[:, None, None, :], -np.inf, scores)
        out = np.einsum("tkgs,ksd->tkgd", _softmax(scores), v)
        return out.reshape(t, c.q_dim)

    def _mlp(self, i: int, h: np.ndarray) -> np.ndarray:
        w, p = self.weights, f"layers.{i}.mlp."
        if self.config.family == "gpt2":
            return _gelu_tanh(h @ w[p + "w_up"] + w[p + "b_up"]) @ w[p + "w_down"] + w[p + "b_down"]
        return (_silu(h @ w[p + "w_gate"]) * (h @ w[p + "w_up"])) @ w[p + "w_down"]

    def _embed(self, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        c = self.config
        bad = (tokens < 0) | (tokens >= c.vocab_size)
        if bad.any():
            raise InputError(f"token must be in 0..{c.vocab_size - 1}, not {int(tokens[bad][0])}")
        x = self.weights["tok_embed"][tokens]
        if c.family == "gpt2":
            x = x + self.weights["pos_embed"][positions]
        return x

    def _head(self, x: np.ndarray) -> np.ndarray:
        x = self._norm(x, "final_norm")
        if self.config.tie_embeddings:
            return x @ self.weights["tok_embed"].T
        return x @ self.weights["lm_head"]

    def _out_proj(self, i: int, a: np.ndarray) -> np.ndarray:
        w, p = self.weights, f"layers.{i}.attn."
        y = a @ w[p + "wo"]
        return y + w[p + "bo"] if self.config.family == "gpt2" else y

    # -- public API --------------------------------------------------------------------------

    def new_cache(self) -> KVCache:
        """An empty KV cache sized for ``max_context`` positions."""
        return KVCache.empty(self.config, self.dtype)

    def step(self, token: int, cache: KVCache) -> np.ndarray:
        """Run one token at position ``cache.length``; append its keys/values; return its logits.

        Returns a ``(vocab_size,)`` array of ``dtype``. Raises ValueError when the cache is full
        (``cache.length == max_context``) or the token is outside the vocabulary.
        """
        c = self.config
        pos = cache.length
        if pos >= c.max_context:
            raise InputError(f"context is full: position {pos} is beyond max_context={c.max_context}")
        positions = np.array([pos])
        x = self._embed(np.array([int(token)]), positions)
        for i in range(c.n_layers):
            q, k, v = self._qkv(i, self._norm(x, f"layers.{i}.attn_norm"), positions)
            cache.k[i, :, pos] = k[0]
            cache.v[i, :, pos] = v[0]
            a = self._attend(q, cache.k[i, :, : pos + 1], cache.v[i, :, : pos + 1], positions)
            x = x + self._out_proj(i, a)
            x = x + self._mlp(i, self._norm(x, f"layers.{i}.mlp_norm"))
        cache.length = pos + 1
        return self._head(x)[0]

    def forward(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Logits ``(T, vocab_size)`` for every position of ``tokens`` (positions 0..T-1), no cache.

        Equal, within float rounding, to calling ``step`` on each token in turn.
        """
        c = self.config
        toks = np.asarray(tokens, dtype=np.int64).reshape(-1)
        t = toks.shape[0]
        if not 0 < t <= c.max_context:
            raise InputError(f"sequence length must be in 1..{c.max_context}, not {t}")
        positions = np.arange(t)
        x = self._embed(toks, positions)
        for i in range(c.n_layers):
            q, k, v = self._qkv(i, self._norm(x, f"layers.{i}.attn_norm"), positions)
            a = self._attend(q, k.transpose(1, 0, 2), v.transpose(1, 0, 2), positions)
            x = x + self._out_proj(i, a)
            x = x + self._mlp(i, self._norm(x, f"layers.{i}.mlp_norm"))
        return self._head(x)


def check_temperature(temperature) -> float:
    """``temperature`` as a float: finite and >= 0 (0 is greedy); InputError otherwise."""
    if not is_real(temperature):
        raise InputTypeError(f"temperature must be a finite number >= 0, not {temperature!r}")
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise InputError(f"temperature must be a finite number >= 0, not {temperature!r}")
    return temperature


def sampling_probs(logits: np.ndarray, *, temperature: float, top_k: int | None = None) -> np.ndarray:
    """The distribution a token is drawn from, given ``logits`` (the last axis is the vocabulary):
    float64 ``softmax(logits / temperature)`` restricted to the ``top_k`` largest logits (all of them
    when ``top_k`` is None). ``temperature == 0`` is greedy: one-hot at the largest logit (the first
    one on a tie). The one rule of :func:`sample_next` and of speculative sampling
    (:mod:`golden.speculative_sampling`). InputError for a negative temperature or a ``top_k``
    outside 1..vocab_size."""
    temperature = check_temperature(temperature)
    logits = np.asarray(logits, dtype=np.float64)
    n = logits.shape[-1]
    if top_k is not None and (not is_int(top_k) or not 1 <= top_k <= n):
        raise InputError(f"top_k must be an integer in 1..{n} or None, not {top_k!r}")
    if temperature == 0:
        return (np.arange(n) == np.argmax(logits, axis=-1)[..., None]).astype(np.float64)
    # softmax((l - max) / T) is softmax(l / T) exactly, and stays defined for any T > 0: the
    # largest logit becomes 0 and the others <= 0, so a tiny T drives them to -inf (probability 0,
    # the limit) instead of overflowing l / T to +-inf, whose difference is NaN. For T below
    # gap / 745 (gap: from the largest logit to the next) every other probability underflows to 0:
    # the draw is the argmax, shared equally between tied maxima.
    with np.errstate(over="ignore", under="ignore"):
        z = (logits - logits.max(-1, keepdims=True)) / temperature
    if top_k is not None and top_k < n:
        kth = np.partition(z, -top_k, axis=-1)[..., -top_k, None]
        z = np.where(z >= kth, z, -np.inf)
    return _softmax(z)


def draw(p: np.ndarray, rng: np.random.Generator) -> int:
    """One token drawn from the distribution ``p`` (1-D, sums to 1) with ``rng``."""
    return int(rng.choice(p.shape[-1], p=p))


def sample_next(logits: np.ndarray, rng: np.random.Generator | None = None, *,
                temperature: float = 0.0, top_k: int | None = None) -> int:
    """Choose the next token from ``logits``.

    ``temperature == 0`` is greedy: the index of the largest logit (the first one on a tie);
    ``rng`` is then unused. Otherwise draw from :func:`sampling_probs` (``softmax(logits /
    temperature)`` restricted to the ``top_k`` largest logits) with ``rng``.
    Raises ValueError for a negative temperature, a ``top_k`` outside 1..vocab_size or a
    missing ``rng`` when sampling.
    """
    p = sampling_probs(logits, temperature=temperature, top_k=top_k)
    if float(temperature) == 0:
        return int(np.argmax(p))
    if rng is None:
        raise InputError("sampling with temperature > 0 needs a random generator (rng)")
    return draw(p, rng)


def generate(model: Transformer, prompt: Sequence[int], max_new_tokens: int, *,
             temperature: float = 0.0, top_k: int | None = None, seed: int = 0) -> list[int]:
    """Feed ``prompt`` through a fresh KV cache, then produce ``max_new_tokens`` tokens.

    Greedy when ``temperature == 0``; otherwise seeded sampling (``numpy.random.default_rng(seed)``),
    so the same arguments always give the same tokens. Returns only the new tokens. Raises
    ValueError for a bad prompt or when it and the new tokens need more positions than ``max_context``
    (:func:`golden.greedy.check_prompt`).
    """
    prompt = check_prompt(prompt, max_new_tokens, model.config.max_context, model.config.vocab_size)
    rng = np.random.default_rng(seed)
    cache = model.new_cache()
    for t in prompt:
        logits = model.step(t, cache)
    out: list[int] = []
    for n in range(max_new_tokens):
        tok = sample_next(logits, rng, temperature=temperature, top_k=top_k)
        out.append(tok)
        if n + 1 < max_new_tokens:
            logits = model.step(tok, cache)
    return out
