"""Train Lockstep's demo model: a small Llama-family character model of golden/data/demo_corpus.txt.

Usage (from the project root, with the ``parity`` extra installed for torch)::

    python scripts/train_demo.py                  # train, write golden/data/demo/
    python scripts/train_demo.py --write-corpus   # regenerate golden/data/demo_corpus.txt first
    python scripts/train_demo.py --preset draft   # the draft model, write golden/data/draft/

The corpus is English-like prose generated from a small seeded grammar (this file, make_corpus),
so it is the project's own text. Training is seeded and runs on the CPU in 10-16 minutes on a 2-core machine. Torch
is used here only, for autograd; the model is the golden model's architecture, with parameters
held under the golden weight names in the golden orientation (``y = x @ W``). After training the
script checks the NumPy golden model against the torch model on validation text, then writes
config.json, model.safetensors, tokenizer.json and train_report.json to golden/data/demo/.

``--preset draft`` trains the speculative-decoding draft model instead (``draft_config``: one layer,
d_model 32) on the same corpus with the demo model's tokenizer (read from golden/data/demo, and
checked to equal the corpus's alphabet), same context, and writes golden/data/draft/.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from golden.checkpoint import demo_model_path, draft_model_path, load_checkpoint, save_checkpoint
from golden.model import ModelConfig, Transformer, generate, init_weights
from golden.tokenizer import CharTokenizer

CORPUS = Path(__file__).resolve().parent.parent / "golden" / "data" / "demo_corpus.txt"
SEED = 1234
CORPUS_SEED = 2024
CORPUS_BYTES = 120_000
PROMPT = "The old miller "

# -- the corpus grammar ------------------------------------------------------------------------

NAMES = ["Anna", "Tom", "Mira", "Ben", "Clara", "Oskar", "Lena", "Hugo", "Ruth", "Felix"]
FEMALE = {"Anna", "Mira", "Clara", "Lena", "Ruth"}
PEOPLE = ["miller", "baker", "fisherman", "shepherd", "weaver", "farmer", "teacher", "sailor",
          "blacksmith", "gardener", "doctor", "painter"]
ANIMALS = ["fox", "cat", "dog", "horse", "goat", "owl", "crow", "rabbit", "bear", "duck"]
ADJ_AGE = ["old", "young", "little", "tall", "quiet", "kind", "tired", "clever", "brave", "lazy"]
PLACES = ["the river", "the mill", "the village", "the forest", "the hill", "the market",
          "the old bridge", "the harbour", "the garden", "the church", "the meadow", "the well"]
TIMES = ["at dawn", "in the evening", "after the rain", "before supper", "at noon", "in the morning",
         "late at night", "on a cold day", "in the spring", "every Sunday", "that winter"]
VI = ["walked to {place}", "slept under the oak tree", "sang a quiet song", "went home",
      "sat by the fire", "waited near {place}", "ran across {place}", "looked at the sky",
      "laughed for a long time", "worked until dark", "wrote a long letter", "counted the stars"]
OBJECTS = ["a loaf of bread", "a red apple", "the heavy basket", "an old book", "a small boat",
           "a bag of flour", "the silver key", "a warm coat", "a basket of eggs", "a wooden box",
           "a bright lamp", "the black kettle"]
VT = ["found", "carried", "sold", "bought", "lost", "mended", "painted", "hid", "gave away", "wanted"]
WEATHER = ["The wind was cold and the sky was grey.", "The sun was warm on the fields.",
           "Rain fell on the roofs of the village.", "Snow lay deep on the hill.",
           "The river was high and fast.", "A thin mist hung over the meadow."]
SAYINGS = ["We must go home now", "The bread is ready", "Where is my hat", "Look at the river",
           "It will rain tonight", "I have lost the key", "Come and see the boat", "The fox is back",
           "Thank you for the apples", "Nobody told me"]
FEELINGS = ["happy", "sad", "afraid", "glad", "surprised", "angry", "calm", "hungry"]


def _subject(rng: random.Random) -> str:
    return _subject_pronoun(rng)[0]


def _subject_pronoun(rng: random.Random) -> tuple[str, str]:
    """A subject noun phrase and the pronoun that refers back to it."""
    r = rng.random()
    if r < 0.35:
        name = rng.choice(NAMES)
        return name, "she" if name in FEMALE else "he"
    noun = rng.choice(PEOPLE if r < 0.75 else ANIMALS)
    phrase = f"the {rng.choice(ADJ_AGE)} {noun}" if rng.random() < 0.6 else f"the {noun}"
    return phrase, rng.choice(["he", "she"]) if r < 0.75 else "it"


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _sentence(rng: random.Random) -> str:
    place = rng.choice(PLACES)
    vi = rng.choice(VI).format(place=place)
    kind = rng.randrange(8)
    if kind == 0:
        return f"{_cap(_subject(rng))} {vi} {rng.choice(TIMES)}."
    if kind == 1:
        return f"{_cap(rng.choice(TIMES))}, {_subject(rng)} {rng.choice(VT)} {rng.choice(OBJECTS)}."
    if kind == 2:
        return f"{_cap(_subject(rng))} {rng.choice(VT)} {rng.choice(OBJECTS)} near {place}."
    if kind == 3:
        end = rng.choice([".", "!", "?"]) if rng.random() < 0.5 else "."
        return f"\"{rng.choice(SAYINGS)}{end if end != '.' else ','}\" said {rng.choice(NAMES)}."
    if kind == 4:
        return rng.choice(WEATHER)
    if kind == 5:
        subject, pronoun = _subject_pronoun(rng)
        return f"{_cap(subject)} was {rng.choice(FEELINGS)}, so {pronoun} {vi}."
    if kind == 6:
        return f"{_cap(_subject(rng))} {vi}, and {_subject(rng)} {rng.choice(VI).format(place=place)}."
    return f"When {_subject(rng)} came to {place}, {_subject(rng)} {rng.choice(VT)} {rng.choice(OBJECTS)}."


def make_corpus(seed: int = CORPUS_SEED, n_bytes: int = CORPUS_BYTES) -> str:
    """Paragraphs of 3 to 6 generated sentences, one paragraph a line, about ``n_bytes`` long."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < n_bytes:
        para = " ".join(_sentence(rng) for _ in range(rng.randint(3, 6)))
        lines.append(para)
        size += len(para) + 1
    return "\n".join(lines) + "\n"


# -- the model in torch, under golden weight names -------------------------------------------------

def demo_config(vocab_size: int) -> ModelConfig:
    return ModelConfig(family="llama", vocab_size=vocab_size, d_model=64, n_layers=4, n_heads=4,
                       n_kv_heads=2, head_dim=16, d_ff=192, max_context=128, norm_eps=1e-5,
                       rope_theta=10000.0, tie_embeddings=False)


def draft_config(vocab_size: int) -> ModelConfig:
    """The draft model: the demo model's family, vocabulary and context, one layer of width 32."""
    return replace(demo_config(vocab_size), d_model=32, n_layers=1, n_heads=2, n_kv_heads=1,
                   head_dim=16, d_ff=96)


#: Each preset: its model shape, the default output directory and training steps.
PRESETS = {"demo": (demo_config, demo_model_path, 1500), "draft": (draft_config, draft_model_path, 8000)}


def build_torch_model(config: ModelConfig, seed: int):
    import torch

    class TorchLlama(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            init = init_weights(config, seed=seed, std=0.02)
            # Output projections scaled down with depth, as GPT-2 does, for stable early training.
            for name in init:
                if name.endswith(("attn.wo", "mlp.w_down")):
                    init[name] = init[name] / math.sqrt(2 * config.n_layers)
            # ParameterDict keys may not contain ".", so golden names are stored with "__".
            params = {k.replace(".", "__"): torch.nn.Parameter(torch.from_numpy(v.copy()))
                      for k, v in init.items()}
            self.p = torch.nn.ParameterDict(params)
            c = config
            inv = 1.0 / (c.rope_theta ** (np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim))
            ang = np.arange(c.max_context, dtype=np.float64)[:, None] * inv[None, :]
            ang = np.concatenate([ang, ang], -1).astype(np.float32)
            self.register_buffer("cos", torch.from_numpy(np.cos(ang)), persistent=False)
            self.register_buffer("sin", torch.from_numpy(np.sin(ang)), persistent=False)

        def w(self, name: str):
            return self.p[name.replace(".", "__")]

        def norm(self, x, name):
            scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + config.norm_eps)
            return x * scale * self.w(name + ".weight")

        def rope(self, x):  # x: (B, H, T, hd)
            t, half = x.shape[2], x.shape[-1] // 2
            rot = torch.cat([-x[..., half:], x[..., :half]], -1)
            return x * self.cos[:t] + rot * self.sin[:t]

        def forward(self, idx):
            c = config
            b, t = idx.shape
            x = self.w("tok_embed")[idx]
            for i in range(c.n_layers):
                p = f"layers.{i}."
                h = self.norm(x, p + "attn_norm")
                q = (h @ self.w(p + "attn.wq")).view(b, t, c.n_heads, c.head_dim).transpose(1, 2)
                k = (h @ self.w(p + "attn.wk")).view(b, t, c.n_kv_heads, c.head_dim).transpose(1, 2)
                v = (h @ self.w(p + "attn.wv")).view(b, t, c.n_kv_heads, c.head_dim).transpose(1, 2)
                q, k = self.rope(q), self.rope(k)
                k = k.repeat_interleave(c.group_size, dim=1)
                v = v.repeat_interleave(c.group_size, dim=1)
                a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = x + a.transpose(1, 2).reshape(b, t, c.q_dim) @ self.w(p + "attn.wo")
                h = self.norm(x, p + "mlp_norm")
                g = torch.nn.functional.silu(h @ self.w(p + "mlp.w_gate")) * (h @ self.w(p + "mlp.w_up"))
                x = x + g @ self.w(p + "mlp.w_down")
            return self.norm(x, "final_norm") @ self.w("lm_head")

        def export(self) -> dict[str, np.ndarray]:
            return {k.replace("__", "."): v.detach().numpy().copy() for k, v in self.p.items()}

    return TorchLlama()


# -- training ---------------------------------------------------------------------------------------

def train(args: argparse.Namespace) -> dict:
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    text = CORPUS.read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    if args.preset != "demo":  # a draft must speak the demo model's tokens
        demo_tok = load_checkpoint(demo_model_path()).tokenizer
        if demo_tok is None or demo_tok.chars != tok.chars:
            raise SystemExit("the corpus's alphabet differs from the demo model's tokenizer")
        tok = demo_tok
    vocab = 8 * math.ceil(tok.vocab_size / 8)  # hardware-friendly; spare ids are never produced
    config = PRESETS[args.preset][0](vocab)
    data = np.array(tok.encode(text), dtype=np.int64)
    n_val = len(data) // 20
    train_data, val_data = data[:-n_val], data[-n_val:]
    model = build_torch_model(config, args.seed)
    decay = [p for n, p in model.p.items() if p.ndim == 2]
    no_decay = [p for n, p in model.p.items() if p.ndim == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(args.seed)
    t_ctx = config.max_context

    def batch(src: np.ndarray, n: int):
        starts = rng.integers(0, len(src) - t_ctx - 1, n)
        x = np.stack([src[s: s + t_ctx] for s in starts])
        y = np.stack([src[s + 1: s + t_ctx + 1] for s in starts])
        return torch.from_numpy(x), torch.from_numpy(y)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    losses = []
    start = time.perf_counter()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = batch(train_data, args.batch)
        loss = torch.nn.functional.cross_entropy(model(x).view(-1, vocab), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  {time.perf_counter() - start:6.1f} s", flush=True)
    train_seconds = time.perf_counter() - start

    model.eval()
    with torch.no_grad():
        n_chunks = len(val_data) // (t_ctx + 1)
        chunks = val_data[: n_chunks * (t_ctx + 1)].reshape(n_chunks, t_ctx + 1)
        xv, yv = torch.from_numpy(chunks[:, :-1]), torch.from_numpy(chunks[:, 1:])
        val_logits = model(xv)
        val_loss = float(torch.nn.functional.cross_entropy(val_logits.reshape(-1, vocab), yv.reshape(-1)))
    weights = model.export()

    # The golden model must compute what torch trained: compare on one validation chunk.
    golden = Transformer(config, weights)
    golden_logits = golden.forward(chunks[0, :-1])
    parity = float(np.max(np.abs(golden_logits - val_logits[0].numpy())))
    if parity > 1e-4:
        raise SystemExit(f"golden model differs from the trained torch model by {parity:.3g}")

    out = Path(args.out)
    save_checkpoint(out, config, weights, tok)
    prompt_ids = tok.encode(PROMPT)
    greedy = tok.decode(generate(golden, prompt_ids, 100))
    sampled = tok.decode(generate(golden, prompt_ids, 100, temperature=0.8, top_k=10, seed=0))
    report = {
        "preset": args.preset, "seed": args.seed, "steps": args.steps, "batch": args.batch, "context": t_ctx,
        "lr": args.lr, "threads": args.threads, "torch_version": torch.__version__,
        "corpus_chars": len(data), "val_chars": int(n_val), "alphabet": tok.vocab_size,
        "n_params": config.n_params(), "int8_weight_bytes": config.n_params(),
        "checkpoint_bytes": sum(f.stat().st_size for f in out.iterdir() if f.name != "train_report.json"),
        "train_seconds": round(train_seconds, 1),
        "initial_loss": round(losses[0], 4),
        "final_train_loss": round(float(np.mean(losses[-50:])), 4),
        "val_loss": round(val_loss, 4),
        "val_bits_per_char": round(val_loss / math.log(2), 4),
        "golden_vs_torch_max_abs_logit_diff": parity,
        "prompt": PROMPT, "greedy_sample": greedy, "sampled_t0.8_k10_seed0": sampled,
    }
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-corpus", action="store_true", help="regenerate the corpus before training")
    ap.add_argument("--corpus-only", action="store_true", help="regenerate the corpus and stop")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                    help="model to train: demo (golden/data/demo) or draft (golden/data/draft)")
    ap.add_argument("--out", default=None, help="output checkpoint directory (default: the preset's)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    _, default_out, default_steps = PRESETS[args.preset]
    args.out = args.out if args.out is not None else str(default_out())
    args.steps = args.steps if args.steps is not None else default_steps
    if args.write_corpus or args.corpus_only:
        CORPUS.write_text(make_corpus(), encoding="utf-8")
        print(f"wrote {CORPUS} ({CORPUS.stat().st_size} bytes)")
        if args.corpus_only:
            return
    report = train(args)
    print(json.dumps({k: v for k, v in report.items() if "sample" not in k}, indent=2))
    print("greedy:", report["prompt"] + report["greedy_sample"])
    print("sampled:", report["prompt"] + report["sampled_t0.8_k10_seed0"])


if __name__ == "__main__":
    main()
