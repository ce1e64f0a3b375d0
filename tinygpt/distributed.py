"""Data-parallel training over MPI: the few building blocks the training loop needs.

    mpiexec -n 2 tinygpt train ...        # two ranks (processes), one model copy each

Every rank holds the whole model and the same AdamW state. Each optimizer step:

    1. each rank runs forward and backward on its own micro-batches   (`micro_batches`)
    2. the gradients are averaged over the ranks: all of them packed into one flat buffer,
       one MPI Allreduce (sum) in place, divided by the number of ranks  (`GradientReducer`)
    3. every rank applies the same AdamW step to the same gradient, so the weights stay
       identical without ever being sent; `check_same` verifies that now and then.

MPI itself (the transport, the ring/tree algorithms of Allreduce, launching ranks on several
machines) is not written here: it comes from mpi4py and an MPI library, both optional
(`pip install "tinygpt[mpi]"`). Without `mpiexec`, `world()` is a world of one rank, mpi4py is
never imported, and every function here does nothing, so the training loop calls them always.

Only array ("buffer") calls of mpi4py are used (the capitalised Allreduce, Allgather, Bcast):
its lower-case calls send Python objects through pickle, which tinygpt avoids.

How a training loop uses it (G micro-batches per rank and step, i.e. --grad-accum G):

    w = world()
    reducer = GradientReducer(params, w)
    with abort_on_error(w):                          # one rank fails: all stop, none hangs
        for it in range(start, max_iters):
            if any_rank(stop_requested, w): ...      # every rank stops at the same step
            model.zero_grad()
            for x, y in micro_batches(batch_rng, draw, G, w.rank, w.size):
                (model(x, y)[1] / G).backward()
            reducer.reduce()                         # before clipping: all clip the same mean
            clip_grad_norm_(params, ...); optimizer.step()
            # at an evaluation: allreduce_mean(loss, w), check_same(params, w); w.is_main saves
"""
from __future__ import annotations

import contextlib
import os
import zlib
from dataclasses import dataclass

import numpy as np

INSTALL_HINT = 'pip install "tinygpt[mpi]"'

# Variables that a launcher sets in every rank's environment: MPICH's and Intel MPI's hydra
# (PMI_*), Open MPI (OMPI_COMM_WORLD_*), PMIx-based launchers such as Slurm's srun --mpi=pmix.
LAUNCHER_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


class DistributedError(RuntimeError):
    """The ranks cannot work together (missing mpi4py, mismatched MPI, diverged weights)."""


# -- who am I: the world of ranks ----------------------------------------------------------------

@dataclass(frozen=True)
class World:
    """This process's place among the ranks. rank 0 is the main rank: it alone writes
    checkpoints, metrics and the progress bar. `comm` is mpi4py's COMM_WORLD (None alone)."""
    rank: int = 0
    size: int = 1
    comm: object = None
    local_size: int = 1       # ranks on this machine: they share its cores, so each one
                              # should run about cores / local_size threads (--threads)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # The three collective calls used below. Each is a no-op for a world of one rank, and each
    # is the only place that touches mpi4py (a test replaces them to fake a second rank).
    def sum_(self, buf: np.ndarray) -> None:
        """buf <- the element-wise sum of every rank's buf, in place, on every rank."""
        if self.size > 1:
            from mpi4py import MPI
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def gather(self, row: np.ndarray) -> np.ndarray:
        """(size, len(row)): every rank's row, in rank order, on every rank."""
        row = np.ascontiguousarray(row)
        if self.size == 1:
            return row[None, :].copy()
        out = np.empty((self.size, row.size), dtype=row.dtype)
        self.comm.Allgather(row, out)
        return out


def world(environ=None) -> World:
    """The world this process was launched into: size 1 unless started by an MPI launcher.

    mpi4py is imported only when a launcher's variable (PMI_RANK, OMPI_COMM_WORLD_RANK,
    PMIX_RANK) is set, so a plain `tinygpt train` never loads MPI.
    """
    env = os.environ if environ is None else environ
    launcher = next((v for v in LAUNCHER_RANK_VARS if v in env), None)
    if launcher is None:
        return World()
    declared = next((int(env[v]) for v in LAUNCHER_SIZE_VARS if v in env), None)
    try:
        from mpi4py import MPI
    except ImportError:
        if declared == 1:
            return World()              # `mpiexec -n 1`: one rank, nothing to share
        raise DistributedError(
            f"this process was started by an MPI launcher ({launcher}={env[launcher]}) but "
            f"mpi4py is not installed, so every rank would train alone and all of them would "
            f"write the same checkpoint. Install the MPI extra: {INSTALL_HINT} "
            f"(or drop mpiexec to train in one process)") from None
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    if declared is not None and declared != size:
        raise DistributedError(
            f"the launcher started {declared} ranks but MPI sees a world of {size}: mpiexec and "
            f"mpi4py belong to different MPI libraries (mpi4py uses "
            f"{' '.join(MPI.Get_library_version().split()[:3])}). Use the mpiexec installed "
            f"with mpi4py (`python -m pip show -f mpich` lists it), or reinstall with "
            f"{INSTALL_HINT}")
    if size == 1:
        return World()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)       # the ranks that share this machine
    local_size = local.Get_size()
    local.Free()
    return World(rank=comm.Get_rank(), size=size, comm=comm, local_size=local_size)


# -- which data each rank sees -------------------------------------------------------------------

def micro_batches(rng: np.random.Generator, draw, n_micro: int = 1, rank: int = 0,
                  size: int = 1):
    """This rank's micro-batches for one optimizer step: `n_micro` results of `draw(rng)`,
    drawn as they are used (an iterator).

    One stream of batches, the same on every rank: `rng` is seeded with the run's seed only.
    Each step draws n_micro * size micro-batches from it, in order, numbered j = 0, 1, ...;
    rank r keeps the consecutive ones j = r * n_micro ... (r + 1) * n_micro - 1 and skips the
    others (drawing them anyway, so every rank's rng stays in the same state).

    So one step of `size` ranks × `n_micro` micro-batches trains on exactly the micro-batches
    of one process with --grad-accum n_micro * size: with size=1 this rank keeps all of them,
    in the same order, and with n_micro=1 rank r's k-th batch is micro-batch r of step k in
    that single-process run. Because the rng is in the same state on every rank, rank 0's copy
    saved in the checkpoint resumes every rank.

    draw: rng -> batch, e.g. `lambda rng: data.batch("train", B, T, rng)`. Skipping another
    rank's batch costs one draw (B random offsets and a B×T gather), small beside forward.
    """
    if n_micro < 1 or not 0 <= rank < size:
        raise ValueError(f"micro_batches: need n_micro >= 1 and 0 <= rank < size, got "
                         f"n_micro={n_micro}, rank={rank}, size={size}")
    return _drawn_one_at_a_time(rng, draw, n_micro, rank, size)


def _drawn_one_at_a_time(rng, draw, n_micro, rank, size):
    # a generator, so a step holds one micro-batch at a time however large --grad-accum is;
    # looping to the end draws the other ranks' batches too, as the docstring above says
    for j in range(n_micro * size):
        batch = draw(rng)
        if j // n_micro == rank:
            yield batch


# -- averaging gradients: one flat buffer, one Allreduce -----------------------------------------

class GradientReducer:
    """Average every parameter's gradient over the ranks with ONE Allreduce per step.

    One call per parameter would pay the network's latency 148 times a step for GPT-2; one
    buffer pays it once and lets MPI pipeline the whole message. The buffer is allocated once:

        buf = [ grad of p0 (flattened) | grad of p1 | ... | grad of pK-1 | has0 ... hasK-1 ]

    The K trailing slots count the ranks that have a gradient for each parameter, so a
    parameter left without one (p.grad None: it took no part in this rank's loss) counts as
    zeros, and stays None after the step only if no rank had a gradient for it, the same as in
    one process that accumulates the ranks' micro-batches.
    """

    def __init__(self, params, world: World | None = None):
        self.params = list(params)
        self.world = world or World()
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) > 1:
            raise TypeError(f"GradientReducer: the parameters mix dtypes "
                            f"{sorted(map(str, dtypes))}; one flat buffer needs one dtype: "
                            f"cast the model to one")
        self.dtype = np.dtype(dtypes.pop() if dtypes else np.float32)
        self.n_values = sum(p.size for p in self.params)
        self._buf = None

    @property
    def buf(self) -> np.ndarray:
        """The flat buffer, allocated once, on first use: a one-rank run never needs it (for
        GPT-2 124M it would be 0.5 GB of memory for nothing)."""
        if self._buf is None:
            self._buf = np.zeros(self.n_values + len(self.params), dtype=self.dtype)
        return self._buf

    @property
    def nbytes(self) -> int:
        """Bytes each rank puts into the Allreduce per step (and gets back): itemsize ×
        (parameters + one flag per parameter tensor)."""
        return self.dtype.itemsize * (self.n_values + len(self.params))

    def reduce(self) -> None:
        """p.grad <- the mean over ranks of p.grad, for every parameter, on every rank."""
        if self.world.size == 1:
            return
        self.pack()
        self.world.sum_(self.buf)                   # the one network call of the step
        self.buf[:self.n_values] /= self.world.size
        self.unpack()

    def pack(self) -> None:
        """Copy every gradient into the buffer (zeros where a parameter has none)."""
        buf, flags = self.buf[:self.n_values], self.buf[self.n_values:]
        start = 0
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                buf[start:start + p.size] = 0
            else:
                buf[start:start + p.size] = g.reshape(-1)
            flags[i] = g is not None
            start += p.size

    def unpack(self) -> None:
        """Copy the buffer back into every p.grad (None where no rank had a gradient)."""
        buf, flags = self.buf[:self.n_values], self.buf[self.n_values:]
        start = 0
        for i, p in enumerate(self.params):
            mean = buf[start:start + p.size].reshape(p.shape)
            g = p.grad
            if flags[i] == 0:
                p.grad = None
            elif isinstance(g, np.ndarray) and g.flags.writeable:
                np.copyto(g, mean)                   # reuse this rank's own gradient array
            else:
                p.grad = mean.copy()                 # not a view: the buffer is reused next step
            start += p.size


# -- small collectives for the training loop -----------------------------------------------------

def allreduce_mean(value: float, world: World | None = None) -> float:
    """The mean of a number over the ranks, e.g. each rank's evaluation loss."""
    world = world or World()
    buf = np.array([value], dtype=np.float64)
    world.sum_(buf)
    return float(buf[0]) / world.size


def any_rank(flag: bool, world: World | None = None) -> bool:
    """True on every rank if `flag` is true on at least one, e.g. "Ctrl-C was pressed": ranks
    must agree on when to stop, or the others wait forever in the next Allreduce."""
    world = world or World()
    buf = np.array([1.0 if flag else 0.0])
    world.sum_(buf)
    return bool(buf[0] > 0)


def barrier(world: World | None = None) -> None:
    """Wait until every rank gets here (e.g. rank 0 has tidied the run directory)."""
    any_rank(False, world)


@contextlib.contextmanager
def abort_on_error(world: World | None = None):
    """Around the training of one rank: if it fails (an exception, sys.exit(1), Ctrl-C), end
    every rank with MPI_Abort when Python exits, after the error is printed.

    Without this, the other ranks would wait forever in their next Allreduce for a rank that
    is gone. (`python -m mpi4py script.py` does the same for a script; this is for the CLI.)
    """
    world = world or World()
    try:
        yield
    except BaseException as e:
        if world.size > 1:
            from mpi4py.run import set_abort_status
            set_abort_status(e)          # a zero exit status (sys.exit(0)) aborts nothing
        raise


def gather_rng_states(rng: np.random.Generator, world: World | None = None) -> list[dict]:
    """Every rank's state of its own generator (e.g. its dropout stream), in rank order, on every
    rank: what a checkpoint needs so that each rank continues its stream on resume. Sent as six
    uint64 per rank (PCG64's 128-bit state and increment, its buffered 32-bit half), not pickled.
    """
    world = world or World()
    st = rng.bit_generator.state
    if st["bit_generator"] != "PCG64":
        raise TypeError(f"gather_rng_states: expected a PCG64 generator (np.random.default_rng), "
                        f"got {st['bit_generator']}")
    lo = (1 << 64) - 1
    s, inc = st["state"]["state"], st["state"]["inc"]
    row = np.array([s >> 64, s & lo, inc >> 64, inc & lo, st["has_uint32"], st["uinteger"]],
                   dtype=np.uint64)
    return [{"bit_generator": "PCG64",
             "state": {"state": (int(r[0]) << 64) | int(r[1]), "inc": (int(r[2]) << 64) | int(r[3])},
             "has_uint32": int(r[4]), "uinteger": int(r[5])} for r in world.gather(row)]


def checksum(params) -> tuple[float, int]:
    """(float64 sum of all weights, CRC-32 of their bytes): two numbers that differ between
    two ranks as soon as one bit of one weight does (the sum for a reader, the CRC for bits)."""
    total, crc = 0.0, 0
    for p in params:
        data = np.ascontiguousarray(p.data)
        total += float(data.sum(dtype=np.float64))
        crc = zlib.crc32(data.view(np.uint8).reshape(-1), crc)
    return total, crc


def check_same(params, world: World | None = None, where: str = "") -> None:
    """Raise DistributedError on every rank if the ranks' weights are not identical.

    One Allgather of two numbers per rank; meant to run at every evaluation.
    """
    world = world or World()
    if world.size == 1:
        return
    total, crc = checksum(params)
    rows = world.gather(np.array([total, crc], dtype=np.float64))     # (size, 2); crc < 2**32
    if np.array_equal(rows, np.broadcast_to(rows[0], rows.shape), equal_nan=True):
        return                                  # (weights that are NaN on every rank agree)
    table = "; ".join(f"rank {r}: sum {s:.9g}, crc32 {int(c):08x}" for r, (s, c) in enumerate(rows))
    raise DistributedError(
        f"check_same{' ' + where if where else ''}: the weights differ between ranks ({table}). "
        f"Every rank must apply the same update: check that all ranks run the same tinygpt and "
        f"NumPy versions, that each rank's gradients went through GradientReducer.reduce(), and "
        f"that every rank started from the same weights (the same --seed) and optimizer state.")


# -- what goes over the network ------------------------------------------------------------------

def ring_bytes_per_rank(nbytes: int, size: int) -> float:
    """Bytes each rank sends (and receives) in one ring Allreduce of an nbytes buffer:
    reduce-scatter sends size-1 chunks of nbytes/size, allgather sends size-1 more."""
    return 2 * (size - 1) / size * nbytes


def traffic_table(sizes=(2, 8), links_gbit=(1, 10), dtype_bytes: int = 4) -> str:
    """A Markdown table: for each preset of tinygpt/model.py, the gradient buffer, what each
    rank sends per step in a ring Allreduce, and how long that takes at each link speed
    (bandwidth only: no latency, no overlap with compute). Cells read "2 ranks / 8 ranks"."""
    from .model import PRESETS, GPTConfig
    from .params import count_parameters
    ranks = " / ".join(map(str, sizes))
    head = ["preset", "parameters", "gradient buffer", f"sent per rank ({ranks} ranks)"]
    head += [f"at {g} Gb/s ({ranks} ranks)" for g in links_gbit]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, arch in PRESETS.items():
        cfg = GPTConfig(**{"vocab_size": 65, **arch})      # the char presets: Shakespeare's 65
        n_params = count_parameters(cfg)
        nbytes = dtype_bytes * n_params
        sent = [ring_bytes_per_rank(nbytes, n) for n in sizes]
        row = [name, f"{n_params / 1e6:.2f} M", f"{nbytes / 1e6:,.1f} MB",
               " / ".join(f"{b / 1e6:,.1f} MB" for b in sent)]
        row += [" / ".join(f"{b * 8 / (g * 1e9):.3g} s" for b in sent) for g in links_gbit]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":      # python -m tinygpt.distributed: the traffic table of docs/performance.md
    print(traffic_table())
