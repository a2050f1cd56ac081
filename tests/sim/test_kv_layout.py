"""KV memory layouts (sim/serve/kv_layout.py): fixed slots and paged blocks as allocators, the capacity
replay on hand-computed traces, one-line errors, and scripts/bench_kv_layout.py."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from golden.errors import InputError
from sim.serve.kv_layout import FIXED, BlockAllocator, KvFullError, KvGeometry, replay
from sim.serve.requests import Lengths, Request, poisson_trace
from tests.sim.tiny_models import tiny_passes

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_kv_layout.py"


def test_blocks_are_the_memory_over_a_block_s_bytes_and_fixed_slots_are_the_compiler_s():
    g = KvGeometry(memory_bytes=1024, position_bytes=8, max_context=32)
    assert BlockAllocator(g).blocks == 4 and BlockAllocator(g).block_positions == 32
    assert BlockAllocator(g, 4).blocks == 32
    # 8 entries of 5 bits (32 blocks); a fixed slot's table is the slot number, 2 bits of 4.
    assert BlockAllocator(g, 4).table_bits() == 40 and BlockAllocator(g).table_bits() == 2
    compiled = tiny_passes("llama-gqa")
    geo = KvGeometry.of_design(compiled.model.config, compiled.config)
    assert BlockAllocator(geo, FIXED).blocks == compiled.kv_slots > 1
    assert geo.position_bytes * geo.max_context == compiled.slot_rows * 2 * compiled.model.config.head_dim


def test_the_allocator_gives_the_lowest_free_blocks_and_takes_them_back():
    a = BlockAllocator(KvGeometry(memory_bytes=1024, position_bytes=8, max_context=32), 4)
    assert a.allocate("a", 5) == (0, 1)
    assert a.allocate("b", 4) == (2,)
    a.release("a")
    assert a.allocate("c", 9) == (0, 1, 3)
    assert a.table("c") == (0, 1, 3) and a.held_blocks == 4 and a.free_blocks == 28
    a.allocate("d", 32)
    a.allocate("e", 32)
    a.allocate("f", 32)
    assert a.free_blocks == 4 and not a.fits(17) and a.fits(16)
    with pytest.raises(KvFullError, match=r"^the KV memory is full: sequence 'g' needs 5 blocks of 4 positions for "
                                          r"17 positions, 4 of 32 are free$"):
        a.allocate("g", 17)


def _trace():
    # Positions: a 3 + 2 - 1 = 4, b 1 + 3 - 1 = 3, c 2, d 1.
    return [Request("a", (1, 1, 1), 2, 0), Request("b", (1,), 3, 0), Request("c", (1, 1), 1, 0),
            Request("d", (1,), 1, 0)]


def test_replay_fixed_slots_by_hand():
    # One slot of 8 positions: a runs 2 steps, b 3, c 1, d 1, one at a time; d runs alone (not saturated).
    o = replay(_trace(), KvGeometry(memory_bytes=8, position_bytes=1, max_context=8), FIXED)
    assert (o.layout, o.blocks, o.steps, o.saturated_steps, o.peak, o.mean) == ("fixed", 1, 7, 6, 1, 1.0)
    assert o.allocated == 1.0
    assert o.written == pytest.approx((3 + 4 + 1 + 2 + 3 + 2) / 48)
    assert o.rounding == pytest.approx((4 + 4 + 5 + 5 + 5 + 6) / 48)


def test_replay_paged_by_hand():
    # 4 blocks of 2: a (2 blocks) and b (2) run; after a retires (step 2) c and d take a's blocks.
    o = replay(_trace(), KvGeometry(memory_bytes=8, position_bytes=1, max_context=8), 2)
    assert (o.layout, o.blocks, o.steps, o.saturated_steps, o.peak, o.mean) == ("paged B=2", 4, 3, 2, 3, 2.0)
    assert o.allocated == 1.0
    assert o.written == pytest.approx((4 / 8 + 6 / 8) / 2)
    assert o.rounding == pytest.approx(1 / 8)
    # Twice the memory: everything fits at once, nothing waits: the means are over every step.
    o = replay(_trace(), KvGeometry(memory_bytes=16, position_bytes=1, max_context=8), 2)
    assert (o.steps, o.saturated_steps, o.peak) == (3, 0, 4)
    assert o.mean == pytest.approx((4 + 2 + 1) / 3)
    assert o.allocated == pytest.approx((12 + 8 + 4) / 3 / 16)      # a, b, c, d; a, b; b


@pytest.mark.parametrize(("make", "message"), [
    (lambda: KvGeometry(memory_bytes=0, position_bytes=8, max_context=32),
     "KV geometry: memory_bytes must be a positive integer, not 0"),
    (lambda: BlockAllocator(KvGeometry(1024, 8, 32), 3),
     r"kv_block must be 0 \(fixed slots\) or a power of two up to max_context \(32\), not 3"),
    (lambda: BlockAllocator(KvGeometry(1024, 8, 32), 64), r"kv_block must be .* not 64"),
    (lambda: BlockAllocator(KvGeometry(1024, 8, 32), True), r"kv_block must be .* not True"),
    (lambda: BlockAllocator(KvGeometry(100, 8, 32), 4),
     "a KV memory of 100 bytes holds no sequence of max_context 32 positions of 8 bytes"),
    (lambda: BlockAllocator(KvGeometry(1024, 8, 32)).blocks_for(33),
     r"a sequence's positions must be an integer in 1\.\.32, not 33"),
    (lambda: BlockAllocator(KvGeometry(1024, 8, 32)).release("x"), "sequence 'x' holds no KV blocks"),
    (lambda: replay([], KvGeometry(1024, 8, 32)), "no requests to replay"),
    (lambda: replay([Request("long", (1,) * 30, 4, 0)], KvGeometry(1024, 8, 32)),
     r"request long: prompt \(30 tokens\) plus 4 new tokens needs 33 positions"),
    (lambda: replay([Request("z", (1,), 0, 0)], KvGeometry(1024, 8, 32)),
     "request z: max_new_tokens must be a positive integer, not 0"),
])
def test_bad_inputs_are_one_line(make, message):
    with pytest.raises(InputError, match=f"^{message}") as info:
        make()
    assert "\n" not in str(info.value)


def test_a_sequence_holds_its_blocks_once():
    a = BlockAllocator(KvGeometry(1024, 8, 32))
    a.allocate(7, 1)
    with pytest.raises(InputError, match=r"^sequence 7 already holds KV blocks \[0\]$"):
        a.allocate(7, 1)


def bench(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_the_script_s_figures_are_the_replay_s(tmp_path):
    png = tmp_path / "k.png"
    out = bench("--requests", 60, "--blocks", "8", "--plot", png, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    assert [r["layout"] for r in rows] == ["fixed", "paged B=8"] * 4
    sys.path.insert(0, str(SCRIPT.parent))    # the script is no module of a package: import it by its folder
    try:
        import bench_kv_layout
    finally:
        sys.path.remove(str(SCRIPT.parent))
    geo = bench_kv_layout.geometries()
    for r in rows[:4]:
        g, vocab = geo[r["study"]]
        trace = poisson_trace(requests=60, rate=1.0, clock_hz=1.0, prompt=Lengths.parse(r["prompt"], "p"),
                              output=Lengths.parse(r["output"], "o"), vocab_size=vocab, seed=0)
        o = replay(trace, g, r["block"])
        assert (r["peak"], r["mean"], r["rounding"]) == (o.peak, o.mean, o.rounding)
    assert rows[0]["blocks"] == 8 and rows[0]["mean"] == 8       # the demo design's 8 fixed slots, full
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("args", "message"), [
    (("--blocks", "3"), "--blocks takes powers of two separated by commas, not '3'"),
    (("--blocks", "256"), "--blocks 256: more than demo on demo's context of 128 positions"),
    (("--requests", "0"), "requests must be an integer in 1..1,000,000, not 0"),
    (("--plot", "/nonexistent/x.png"), "--plot /nonexistent/x.png: no such directory"),
])
def test_the_script_s_bad_inputs_are_one_line(args, message):
    out = bench(*args, *(() if "--plot" in args else ("--plot", "")))
    assert out.returncode == 1
    assert out.stderr == f"bench_kv_layout: error: {message}\n"


def test_the_docs_table_is_the_script_s_output():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    table = re.search(r"<!-- kv layout table -->\n(.*?)\n<!-- end kv layout table -->", doc, re.S).group(1)
    out = bench("--markdown", "--plot", "")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == table
