"""Moving tensors between the blob store and torch, with their content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from zoo.db.entities import TensorRecord
from zoo.errors import (
    WRITE_ERRNOS,
    DeviceUnavailableError,
    InvalidInputError,
    StorageError,
    ZooError,
)

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def writing_to(store) -> Iterator[None]:
    """A file system's refusal while blobs are written (no space, read-only), said of the
    blob store in one line: the failing write may name no file."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, ZooError) or exc.errno not in WRITE_ERRNOS:
            raise
        raise StorageError(
            f"Cannot write to the blob store {store.url}: {exc.strerror or exc}; nothing "
            "was recorded."
        ) from exc


def resolve_device(device: str | None, *, prefer_gpu: bool = False):
    """A torch device; a clear error (not a traceback) when it is not available. Without
    ``device``: ``$ZOO_DEVICE`` when set (e.g. ``cpu`` on a GPU machine whose virtual
    checkpoints CPU-only users must re-derive), else the GPU when ``prefer_gpu`` and one is
    available, else the CPU."""
    import torch

    from .arguments import check_device

    check_device(device)
    # An index is a GPU's, as torch reads it: device=0 is cuda:0, not "no device given".
    name = device if device is not None else os.environ.get("ZOO_DEVICE", "")
    # Where the name came from, for the errors: the variable is set once and forgotten.
    given = f"$ZOO_DEVICE {name!r}" if device is None else repr(name)
    if isinstance(name, int):
        name = f"cuda:{name}"
    if name == "":
        name = "cuda" if prefer_gpu and torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"{given} is not a torch device (try cpu or cuda).") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"The device {given} was requested but no CUDA GPU is available here; use cpu."
        )
    if dev.type not in ("cpu", "cuda"):
        raise InvalidInputError(f"Device {given} is not supported; use cpu or cuda.")
    return dev


def meta_state(records: Iterable) -> dict[str, torch.Tensor]:
    """Shape-only (``meta`` device) tensors for records with ``name``, ``shape`` and a
    safetensors ``dtype`` code: enough to group or size a state dict without reading it."""
    import torch

    from zoo.checkpoint.safetensors_format import torch_dtype

    return {
        r.name: torch.empty(r.shape, dtype=torch_dtype(r.dtype), device="meta") for r in records
    }


def raw_bytes(t: torch.Tensor) -> memoryview:
    """The tensor's bytes as safetensors lays them out (CPU, contiguous, little-endian)."""
    from zoo.checkpoint.safetensors_format import tensor_bytes

    return tensor_bytes(t.detach().to("cpu").contiguous())


class KnownDigests:
    """Digests of tensors whose bytes were verified or hashed during one operation.

    Keyed by the memory a tensor covers (device, address, dtype, shape, strides), so a
    view made later of the same region is found too. A hit counts only while the tensor
    is unchanged (torch bumps a version counter, shared by a tensor and all its views, on
    every in-place write) and alive: entries hold the tensor owning the memory weakly, so
    knowing a digest never keeps memory that a streamed derivation has let go, and an
    entry dies with that memory before its address can be reused.
    """

    def __init__(self) -> None:
        self._by_region: dict[tuple, tuple[weakref.ref, int, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _region(t: torch.Tensor) -> tuple:
        return (str(t.device), t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))

    def add(self, t: torch.Tensor, digest: str) -> None:
        region = self._region(t)
        # A view's region is valid while the tensor that owns its memory lives.
        owner = t._base if t._base is not None else t

        def forget(_ref, region=region) -> None:
            with self._lock:
                hit = self._by_region.get(region)
                if hit is not None and hit[0] is _ref:
                    del self._by_region[region]

        with self._lock:
            self._by_region[region] = (weakref.ref(owner, forget), t._version, digest)

    def get(self, t: torch.Tensor) -> str | None:
        with self._lock:
            hit = self._by_region.get(self._region(t))
        if hit is None or hit[0]() is None or hit[1] != t._version:
            return None
        return hit[2]


def digest(t: torch.Tensor) -> str:
    """sha256 hex of the tensor's bytes as safetensors lays them out."""
    return hashlib.sha256(raw_bytes(t)).hexdigest()


def layer_digests(t: torch.Tensor) -> list[str]:
    """:func:`digest` of each slice of ``t`` along axis 0, as a state dict would hold it."""
    return [digest(p) for p in t.unbind(0)]


def record(
    name: str, t: torch.Tensor, known: KnownDigests | None = None
) -> tuple[TensorRecord, memoryview | None]:
    """(TensorRecord with sha256, raw bytes) for one tensor; no bytes when the digest
    was already known."""
    from zoo.checkpoint import dtype_code

    digest = known.get(t) if known is not None else None
    data = None
    if digest is None:
        data = raw_bytes(t)
        digest = hashlib.sha256(data).hexdigest()
    nbytes = t.numel() * t.element_size()
    return TensorRecord(name, dtype_code(t.dtype), tuple(t.shape), nbytes, digest), data


def records(
    state: Mapping[str, torch.Tensor], known: KnownDigests | None = None
) -> list[TensorRecord]:
    """Tensor records (names sorted) of a state dict, without storing anything."""

    def one(n: str) -> TensorRecord:
        return record(n, state[n], known)[0]

    names = sorted(state)
    # Only tensors without a known digest cost a pass over their bytes: thread those.
    todo = [n for n in names if known is None or known.get(state[n]) is None]
    hashed = dict(zip(todo, parallel_map(one, todo, cost=_cost(state, todo)), strict=True))
    return [hashed[n] if n in hashed else one(n) for n in names]


# Below this many bytes of work in all, starting threads costs more than they save: a
# small checkpoint's tensors are read, hashed and derived faster by the calling thread.
SMALL_WORK = 4 << 20


def parallel_map(
    fn,
    items: list,
    *,
    cost=None,
    workers: int | None = None,
    min_cost: int = SMALL_WORK,
    budget: int | None = None,
) -> list:
    """``[fn(x) for x in items]`` on a few threads, in order.

    sha256 and torch kernels release the GIL, so hashing and transforming independent
    tensors overlap; results are identical to the sequential loop. ``cost`` (one number
    per item, in bytes) starts the dearest items first, so one large tensor does not run
    alone at the end while the other threads idle; work whose costs add up to less than
    ``min_cost`` runs on the calling thread (pass 0 when each item waits on a network
    round trip, which threads overlap whatever its size). ``budget``: the most cost in
    flight at once (see :func:`_within_budget`).
    """
    workers = min(len(items), os.cpu_count() or 1, 8, workers or 8)
    if workers > 1 and cost is not None and sum(cost) < min_cost:
        workers = 1
    if workers <= 1:
        return [fn(x) for x in items]
    order = list(range(len(items)))
    if cost is not None:
        order.sort(key=lambda i: -cost[i])
    results: list = [None] * len(items)
    # A new thread takes torch's thread count from a process-wide default that
    # ``zoo._threads.one_thread`` lowers for a moment in other workers; start from the
    # caller's instead, so no worker runs its elementwise kernels on one thread by chance.
    import torch

    from zoo._threads import set_threads

    threads = torch.get_num_threads()
    if budget is not None and cost is not None:
        return _within_budget(fn, items, order, cost, workers, budget, threads)
    pool = ThreadPoolExecutor(max_workers=workers, initializer=set_threads, initargs=(threads,))
    try:
        for i, value in zip(order, pool.map(lambda i: fn(items[i]), order), strict=True):
            results[i] = value
    except BaseException:
        # A failure or Ctrl-C stops what has not started: items already running finish,
        # the rest never do.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _within_budget(fn, items, order, cost, workers: int, budget: int, threads: int) -> list:
    """:func:`parallel_map` keeping the cost in flight within ``budget``: a free thread
    takes the first waiting item (in ``order``) that fits beside those running, any item
    when none runs, and otherwise waits for one to finish. So two large items never run
    side by side while small ones fill the other threads."""
    import threading

    from zoo._threads import set_threads

    results: list = [None] * len(items)
    waiting = list(order)
    ready = threading.Condition()
    flight = [0]
    failed: list[BaseException] = []

    def next_item() -> int | None:
        with ready:
            while True:
                if failed or not waiting:
                    return None
                for i in waiting:
                    if flight[0] == 0 or flight[0] + cost[i] <= budget:
                        waiting.remove(i)
                        flight[0] += cost[i]
                        return i
                ready.wait()

    def work() -> None:
        set_threads(threads)
        while (i := next_item()) is not None:
            try:
                results[i] = fn(items[i])
            except BaseException as exc:
                failed.append(exc)
            finally:
                with ready:
                    flight[0] -= cost[i]
                    ready.notify_all()

    pool = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in pool:
        t.start()
    try:
        for t in pool:
            t.join()
    except BaseException as exc:
        # Ctrl-C: items already running finish, the rest never start.
        with ready:
            failed.append(exc)
            ready.notify_all()
        for t in pool:
            t.join()
        raise
    if failed:
        raise failed[0]
    return results


def store_min_cost(store) -> int:
    """:func:`parallel_map`'s ``min_cost`` for work that reads or writes ``store``."""
    return 0 if store.remote else SMALL_WORK


def _cost(state: Mapping[str, torch.Tensor], names: list[str]) -> list[int]:
    return [state[n].numel() * state[n].element_size() for n in names]


def store_tensors(
    store, state: Mapping[str, torch.Tensor], known: KnownDigests | None = None
) -> list[TensorRecord]:
    """Put every tensor's bytes in the store (once); returns their records."""

    def put(name: str) -> TensorRecord:
        rec, data = record(name, state[name], known)
        if data is None and store.keep(rec.digest, rec.nbytes):
            return rec  # read from this store: already there (and now freshened)
        if data is None:
            data = raw_bytes(state[name])
        with writing_to(store):  # a full store is named, not a bare errno
            store.put(data, rec.digest)  # also refreshes a reused blob so gc keeps it
        return rec

    names = sorted(state)
    return parallel_map(put, names, cost=_cost(state, names), min_cost=store_min_cost(store))


def load_tensors(
    store,
    recs: Iterable[TensorRecord],
    *,
    device=None,
    known: KnownDigests | None = None,
    layer_of: Callable[[str], int | None] | None = None,
) -> dict[str, torch.Tensor]:
    """Read (and verify) tensors from the store, onto ``device``; ``known`` learns their
    digests.

    ``layer_of`` (a family's ``layer_index``): when every record is one layer's tensor of
    one shape and dtype (a group of one role), they are read on the CPU into one buffer in
    layer order, so stacking them into a signal is a view (:func:`zoo.families._common._stack`)
    rather than a second copy of the group."""
    recs = list(recs)
    rows = _stack_rows(recs, layer_of) if device is None or str(device) == "cpu" else None
    stacked = None
    if rows is not None:
        from zoo import _memory
        from zoo.checkpoint import torch_dtype

        stacked = _memory.empty((len(recs), *recs[0].shape), dtype=torch_dtype(recs[0].dtype))

    def load(r: TensorRecord):
        t = read_tensor(store, r, into=None if stacked is None else stacked[rows[r.name]])
        if device is not None and str(device) != "cpu":
            t = t.to(device)
        if known is not None:
            known.add(t, r.digest)
        return t

    values = parallel_map(load, recs, cost=[r.nbytes for r in recs], min_cost=store_min_cost(store))
    return dict(zip([r.name for r in recs], values, strict=True))


def _stack_rows(recs: list[TensorRecord], layer_of) -> dict[str, int] | None:
    """Each record's row in one stacked buffer (by layer), or None when they do not stack:
    fewer than two, not all per-layer, shapes or dtypes that differ, a layer twice, or
    bytes that take the general read path."""
    import sys

    if layer_of is None or len(recs) < 2 or sys.byteorder != "little":
        return None
    first = recs[0]
    layers = [layer_of(r.name) for r in recs]
    if None in layers or len(set(layers)) != len(recs) or first.nbytes == 0:
        return None
    if first.dtype == "BOOL" or any(
        (r.dtype, tuple(r.shape)) != (first.dtype, tuple(first.shape)) for r in recs
    ):
        return None
    by_layer = sorted(range(len(recs)), key=lambda j: layers[j])
    return {recs[j].name: row for row, j in enumerate(by_layer)}


def read_tensor(store, r: TensorRecord, *, into: torch.Tensor | None = None) -> torch.Tensor:
    """One verified CPU tensor, read straight into its own (huge-page hinted) memory, or
    into ``into`` (contiguous, of its shape and dtype)."""
    import sys

    import torch

    from zoo import _memory
    from zoo.checkpoint import tensor_from_bytes, torch_dtype

    dt = torch_dtype(r.dtype)
    if into is None and (r.nbytes == 0 or dt == torch.bool or sys.byteorder != "little"):
        # The general path: validates BOOL bytes and lays out any byte order.
        return tensor_from_bytes(store.get(r.digest), r.dtype, r.shape)
    # A blob of another size is reported corrupt.
    t = _memory.empty(r.shape, dtype=dt) if into is None else into
    store.read_into(r.digest, memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return t
