"""tinygpt/distributed.py: data-parallel building blocks over MPI.

In one process: the world of one rank (and that mpi4py is not even imported), the micro-batch
rule, packing gradients into one buffer and averaging them (a second rank faked in-process),
the weight checksum. Over MPI: this file is also the script that `mpiexec -n 2` runs (see
`_rank_main` at the bottom); the test compares what the two ranks did with one process that
accumulates the same two micro-batches.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:           # when mpiexec runs this file as a script
    sys.path.insert(0, str(ROOT))

import tensor                                                        # noqa: E402
from tensor import nn, optim                                         # noqa: E402
from tinygpt import distributed as dist                              # noqa: E402
from tinygpt.distributed import (World, GradientReducer, DistributedError,  # noqa: E402
                                 micro_batches)

from helpers import env_without_launcher, find_mpiexec, run_in_group        # noqa: E402


# -- the world ------------------------------------------------------------------------------------

def test_world_without_a_launcher_is_one_rank_and_never_imports_mpi4py():
    # a fresh interpreter: this one may have imported mpi4py for another test
    code = ("import sys; from tinygpt.distributed import world; w = world(); "
            "print(w.rank, w.size, w.is_main, 'mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env_without_launcher(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1", "True", "False"]


@pytest.mark.parametrize("env", [{"PMI_RANK": "1", "PMI_SIZE": "2"},
                                 {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4"},
                                 {"PMIX_RANK": "0"}])
def test_world_under_a_launcher_without_mpi4py_says_how_to_install(monkeypatch, env):
    monkeypatch.setitem(sys.modules, "mpi4py", None)       # makes `import mpi4py` fail
    with pytest.raises(DistributedError, match=r'pip install "tinygpt\[mpi\]"'):
        dist.world(env)


def test_mpiexec_n1_without_mpi4py_is_one_rank(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert dist.world({"PMI_RANK": "0", "PMI_SIZE": "1"}) == World()


def test_world_refuses_an_mpiexec_from_another_mpi_library():
    # the launcher says 2 ranks but mpi4py's MPI sees 1: what happens when the mpiexec on PATH
    # is not the one mpi4py was installed with; each rank would otherwise train alone
    pytest.importorskip("mpi4py")
    env = {**env_without_launcher(), "PMI_RANK": "0", "PMI_SIZE": "2"}
    code = "from tinygpt.distributed import world; world()"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "started 2 ranks but MPI sees a world of 1" in out.stderr, out.stderr


# -- which batches each rank trains on ------------------------------------------------------------

def _draw(rng):
    return rng.integers(0, 10**9, size=3)       # stands for data.batch(...): 3 random offsets


@pytest.mark.parametrize("size, n_micro", [(1, 1), (2, 1), (3, 2), (4, 3)])
def test_ranks_together_see_the_micro_batches_of_one_accumulating_process(size, n_micro):
    rank_rngs = [np.random.default_rng(7) for _ in range(size)]    # seeded with the seed only
    reference = np.random.default_rng(7)
    for step in range(4):
        ranks = [list(micro_batches(rank_rngs[r], _draw, n_micro, r, size))
                 for r in range(size)]
        # one process, --grad-accum n_micro * size, draws the step's batches one by one
        expected = [_draw(reference) for _ in range(n_micro * size)]
        got = [b for mine in ranks for b in mine]                  # rank 0's, then rank 1's...
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
        if n_micro == 1:                       # rank r's batch is micro-batch r of this step
            for r in range(size):
                np.testing.assert_array_equal(ranks[r][0], expected[r])
    # every rank's stream is where rank 0's is, so rank 0's checkpointed state resumes all
    states = {str(r.bit_generator.state) for r in rank_rngs + [reference]}
    assert len(states) == 1


def test_micro_batches_are_drawn_as_they_are_used():
    """A step holds one micro-batch at a time: --grad-accum 10**20 must not draw 10**20 batches
    before the first forward (it filled 24 GB), and the stream still ends where a full draw
    would."""
    drawn = []

    def draw(rng):
        drawn.append(1)
        return _draw(rng)
    batches = micro_batches(np.random.default_rng(0), draw, 10**20)
    next(iter(batches))
    assert len(drawn) == 1
    rng, reference = np.random.default_rng(3), np.random.default_rng(3)
    assert len(list(micro_batches(rng, _draw, 2, rank=0, size=3))) == 2
    for _ in range(6):
        _draw(reference)
    assert str(rng.bit_generator.state) == str(reference.bit_generator.state)


def test_micro_batches_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank=2, size=2"):
        micro_batches(np.random.default_rng(0), _draw, 1, rank=2, size=2)
    with pytest.raises(ValueError, match="n_micro=0"):
        micro_batches(np.random.default_rng(0), _draw, 0)


# -- averaging gradients through one buffer -------------------------------------------------------

class _FakeRanks(World):
    """This rank plus the other ranks' packed buffers, summed in-process in place of MPI."""

    def __init__(self, rank, size, others):
        super().__init__(rank, size, None)
        object.__setattr__(self, "others", others)
        object.__setattr__(self, "calls", 0)

    def sum_(self, buf):
        object.__setattr__(self, "calls", self.calls + 1)
        for other in self.others:
            buf += other

    def gather(self, row):
        return np.stack([row] + list(self.others))


def _params(grads, dtype=np.float64):
    """Parameters of the given shapes with the given gradients (None: no gradient)."""
    shapes = [(3, 4), (4,), (2, 2, 2), (5,)]
    ps = [nn.Parameter(np.zeros(s, dtype=dtype)) for s in shapes]
    for p, g in zip(ps, grads):
        p.grad = g
    return ps


def test_reducer_averages_over_two_ranks_and_none_counts_as_zeros():
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (2, 2, 2), (5,)]
    g0 = [rng.standard_normal(s) for s in shapes]
    g1 = [rng.standard_normal(s) for s in shapes]
    g0[1] = None                          # rank 0 has no gradient for p1, rank 1 has one
    g0[3] = g1[3] = None                  # no rank has a gradient for p3
    other = GradientReducer(_params(g1))
    other.pack()
    params = _params([None if g is None else g.copy() for g in g0])
    world = _FakeRanks(0, 2, [other.buf.copy()])
    GradientReducer(params, world).reduce()
    assert world.calls == 1                                    # one Allreduce for everything
    np.testing.assert_allclose(params[0].grad, (g0[0] + g1[0]) / 2, rtol=1e-15)
    np.testing.assert_allclose(params[1].grad, g1[1] / 2, rtol=1e-15)
    np.testing.assert_allclose(params[2].grad, (g0[2] + g1[2]) / 2, rtol=1e-15)
    assert params[3].grad is None                              # as in one accumulating process


def test_reducer_pack_unpack_round_trip_and_reuse():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (4,), (2, 2, 2)]]
    grads.append(None)
    params = _params([None if g is None else g.copy() for g in grads], dtype=np.float32)
    red = GradientReducer(params)
    buf_before = red.buf
    for _ in range(2):                    # the same buffer, step after step
        red.pack()
        red.unpack()
    assert red.buf is buf_before and red.buf.dtype == np.float32
    for p, g in zip(params, grads):
        if g is None:
            assert p.grad is None
        else:
            np.testing.assert_array_equal(p.grad, g)
    # the buffer: every value once, in order, then one has-gradient flag per tensor
    flat = np.concatenate([g.ravel() for g in grads[:3]] + [np.zeros(5, np.float32)])
    np.testing.assert_array_equal(red.buf[:red.n_values], flat)
    np.testing.assert_array_equal(red.buf[red.n_values:], [1, 1, 1, 0])
    assert red.nbytes == 4 * (12 + 4 + 8 + 5 + 4)


def test_reducer_alone_leaves_gradients_untouched():
    g = np.arange(12.0).reshape(3, 4)
    params = _params([g, None, None, None])
    GradientReducer(params).reduce()
    assert params[0].grad is g and params[1].grad is None


def test_reducer_refuses_mixed_dtypes():
    ps = [nn.Parameter(np.zeros(2, np.float32)), nn.Parameter(np.zeros(2, np.float64))]
    with pytest.raises(TypeError, match="mix dtypes"):
        GradientReducer(ps)


def test_allreduce_mean_and_check_same_alone_and_with_a_fake_second_rank():
    assert dist.allreduce_mean(2.5) == 2.5
    assert dist.allreduce_mean(3.0, _FakeRanks(0, 2, [np.array([5.0])])) == 4.0
    params = _params([None] * 4, dtype=np.float32)
    for i, p in enumerate(params):
        p.data[...] = np.random.default_rng(i).standard_normal(p.shape)
    dist.check_same(params)                                    # alone: nothing to compare
    same = np.array(dist.checksum(params), dtype=np.float64)
    dist.check_same(params, _FakeRanks(0, 2, [same]))
    # one weight one ulp away on the other rank: the checksum tells
    params[2].data[0, 1, 1] = np.nextafter(params[2].data[0, 1, 1], np.float32(np.inf))
    other = np.array(dist.checksum(params), dtype=np.float64)
    params[2].data[0, 1, 1] = np.nextafter(params[2].data[0, 1, 1], np.float32(-np.inf))
    assert not np.array_equal(other, same)
    with pytest.raises(DistributedError, match="weights differ between ranks.*rank 1: sum"):
        dist.check_same(params, _FakeRanks(0, 2, [other]), where="at iteration 10")
    # the same NaN on both ranks is the same weights (the loss check reports NaN, not this)
    params[0].data[0, 0] = np.nan
    dist.check_same(params, _FakeRanks(0, 2, [np.array(dist.checksum(params))]))


def test_gathered_rng_states_continue_each_stream_exactly():
    # a state taken mid-stream (with a buffered 32-bit half) restores to the same next draws
    a, b = np.random.default_rng([7, 0]), np.random.default_rng([7, 1])
    a.random(5), a.integers(0, 10, dtype=np.uint32), b.random(3)       # has_uint32 = 1 on a
    row_b = np.array([0] * 6, dtype=np.uint64)
    st = b.bit_generator.state
    row_b[:4] = [st["state"]["state"] >> 64, st["state"]["state"] & (2**64 - 1),
                 st["state"]["inc"] >> 64, st["state"]["inc"] & (2**64 - 1)]
    row_b[4:] = [st["has_uint32"], st["uinteger"]]
    states = dist.gather_rng_states(a, _FakeRanks(0, 2, [row_b]))
    assert states[0] == a.bit_generator.state and states[1] == b.bit_generator.state
    assert dist.gather_rng_states(a) == [a.bit_generator.state]            # alone
    for rng, state in zip((a, b), states):
        again = np.random.default_rng()
        again.bit_generator.state = state
        assert again.integers(0, 10, dtype=np.uint32) == rng.integers(0, 10, dtype=np.uint32)
        np.testing.assert_array_equal(again.random(4), rng.random(4))
    with pytest.raises(TypeError, match="PCG64"):
        dist.gather_rng_states(np.random.Generator(np.random.MT19937(0)))


# -- what is sent per step ------------------------------------------------------------------------

def test_parameter_count_matches_the_model_and_the_released_sizes():
    from tinygpt.model import GPT, GPTConfig, PRESETS
    from tinygpt.params import count_parameters      # what the traffic table counts
    cfg = GPTConfig(**{"vocab_size": 65, **PRESETS["baby"]})
    assert count_parameters(cfg) == GPT(cfg).num_parameters()
    # Hugging Face's GPT2LMHeadModel sizes (lm_head tied to wte), published counts
    released = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168,
                "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    for name, n in released.items():
        assert count_parameters(GPTConfig(**PRESETS[name])) == n


def test_ring_allreduce_traffic():
    assert dist.ring_bytes_per_rank(1000, 1) == 0
    assert dist.ring_bytes_per_rank(1000, 2) == 1000          # half out, then half back
    assert dist.ring_bytes_per_rank(1000, 4) == 1500
    table = dist.traffic_table(sizes=(2,), links_gbit=(1,))
    row = next(line for line in table.splitlines() if line.startswith("| gpt2 |"))
    assert "497.8 MB" in row and "3.98 s" in row               # 124.4 M × 4 B × 8 bit / 1 Gb/s


# -- two real ranks over MPI ----------------------------------------------------------------------

V, C, B, T, STEPS = 13, 8, 4, 5, 3


def _tiny_model():
    """Embedding -> Linear -> GELU -> Linear in float64, the same weights for any seed-0 call."""
    rng = np.random.default_rng(0)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, C, dtype=np.float64, generator=rng)
            self.fc = nn.Linear(C, 16, dtype=np.float64, generator=rng)
            self.out = nn.Linear(16, V, dtype=np.float64, generator=rng)

        def forward(self, x, y):
            h = tensor.gelu(self.fc(self.emb(x)))                          # (B, T, 16)
            logits = self.out(h)                                           # (B, T, V)
            return tensor.cross_entropy(logits.reshape(-1, V), y.reshape(-1))

    return Tiny()


def _data_draw():
    ids = np.random.default_rng(3).integers(0, V, size=200)

    def draw(rng):
        starts = rng.integers(0, len(ids) - T, size=B)                     # (B,)
        offsets = starts[:, None] + np.arange(T)                           # (B, T)
        return ids[offsets], ids[offsets + 1]
    return draw


def _train(world, n_micro):
    """STEPS AdamW steps the way the training loop takes them; returns the step-0 gradients,
    the losses (mean over micro-batches and ranks) and the final weights."""
    model = _tiny_model()
    params = model.parameters()
    opt = optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    reducer = GradientReducer(params, world)
    batch_rng, draw = np.random.default_rng(1337), _data_draw()
    losses, first_grads = [], None
    for _ in range(STEPS):
        model.zero_grad()
        total = 0.0
        for x, y in micro_batches(batch_rng, draw, n_micro, world.rank, world.size):
            loss = model(x, y) / n_micro
            loss.backward()
            total += loss.item()
        reducer.reduce()
        if first_grads is None:
            first_grads = [p.grad.copy() for p in params]
        opt.step()
        losses.append(dist.allreduce_mean(total, world))
    return first_grads, losses, [p.data.copy() for p in params]


def _rank_main(out_dir):
    """What each rank of `mpiexec -n 2 python tests/test_distributed.py OUT` does."""
    world = dist.world()
    assert world.size == 2, f"expected 2 ranks, got {world.size}"
    assert world.local_size == 2                   # both ranks run on this machine
    grads, losses, weights = _train(world, n_micro=1)
    params = _tiny_model().parameters()
    for p, w in zip(params, weights):
        p.data[...] = w
    dist.check_same(params, world)                 # identical after the AdamW steps
    # a rank that drifts by one ulp is caught, on every rank
    if world.rank == 1:
        params[0].data.flat[0] = np.nextafter(params[0].data.flat[0], np.inf)
    try:
        dist.check_same(params, world, where="in the test")
        caught = ""
    except DistributedError as e:
        caught = str(e)
    mean_rank = dist.allreduce_mean(world.rank + 1.0, world)
    stops = [dist.any_rank(world.rank == 1, world), dist.any_rank(False, world)]
    np.savez(Path(out_dir) / f"rank{world.rank}.npz", losses=np.array(losses),
             mean_rank=mean_rank, caught=np.array(caught), is_main=world.is_main, stops=stops,
             **{f"grad{i}": g for i, g in enumerate(grads)},
             **{f"weight{i}": w for i, w in enumerate(weights)})


def _mpiexec_run(args, timeout):
    """`mpiexec -n 2 python this_file args`."""
    return run_in_group([find_mpiexec(), "-n", "2", sys.executable, __file__, *args], timeout)


def test_two_ranks_match_one_process_accumulating_their_micro_batches(tmp_path):
    pytest.importorskip("mpi4py", reason='mpi4py is not installed: pip install -e ".[mpi]"')
    out = _mpiexec_run([str(tmp_path)], timeout=240)
    assert out.returncode == 0, f"mpiexec failed:\n{out.stdout}\n{out.stderr}"
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]

    # the oracle: one process, no MPI, --grad-accum 2 over the same data order
    grads, losses, weights = _train(World(), n_micro=2)
    # ... and, independently of any reducer, the mean of two separately computed gradients
    draw, rng = _data_draw(), np.random.default_rng(1337)
    separate = []
    for x, y in [draw(rng), draw(rng)]:
        model = _tiny_model()
        model(x, y).backward()
        separate.append([p.grad for p in model.parameters()])
    for r in ranks:
        for i, (g_acc, g0, g1) in enumerate(zip(grads, *separate)):
            np.testing.assert_allclose(r[f"grad{i}"], (g0 + g1) / 2, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(r[f"grad{i}"], g_acc, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(r["losses"], losses, rtol=1e-12)
        for i, w in enumerate(weights):
            np.testing.assert_allclose(r[f"weight{i}"], w, rtol=1e-9, atol=1e-12)
        assert float(r["mean_rank"]) == 1.5
        assert "weights differ between ranks" in str(r["caught"])
        assert list(r["stops"]) == [True, False]             # one rank's Ctrl-C stops both
    for i in range(len(weights)):                  # the two ranks' weights: bit for bit
        np.testing.assert_array_equal(ranks[0][f"weight{i}"], ranks[1][f"weight{i}"])
    assert bool(ranks[0]["is_main"]) and not bool(ranks[1]["is_main"])


def _failing_rank_main():
    """Rank 1 fails before the Allreduce that rank 0 is already waiting in."""
    world = dist.world()
    with dist.abort_on_error(world):
        if world.rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        dist.allreduce_mean(1.0, world)


def test_a_failing_rank_ends_every_rank_instead_of_hanging():
    pytest.importorskip("mpi4py", reason='mpi4py is not installed: pip install -e ".[mpi]"')
    try:
        out = _mpiexec_run(["--fail"], timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("rank 0 still waited for rank 1 after 60 s: abort_on_error did not abort")
    assert out.returncode != 0
    assert "rank 1 fails on purpose" in out.stderr


if __name__ == "__main__":
    if sys.argv[1] == "--fail":
        _failing_rank_main()
    else:
        _rank_main(sys.argv[1])
