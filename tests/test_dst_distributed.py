"""Two gloo processes on localhost train a SparseLSTM under
DistributedDataParallel with ST-RNN (or RigL) updates, each on its own data,
and end with identical patterns and values: ST-RNN's decisions need no
communication beyond DDP's gradient allreduce; RigL gathers the rows its
gradient regrow ranks."""

import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sparse_kernels.train.distributed import _NO_BUFFER_SYNC as NO_BUFFER_SYNC  # the kwarg differs across torch releases

WORLD_SIZE = 2
TIME_LIMIT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str, method: str) -> None:
    import sparse_kernels  # noqa: F401  (the ops, in the child)
    from sparse_kernels import SparseLSTM
    from sparse_kernels.dst import DynamicSparsity

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE,
                            timeout=__import__("datetime").timedelta(seconds=120))
    try:
        torch.manual_seed(0)  # the same initial model on every rank
        model = SparseLSTM(6, 8, num_layers=2, density=0.3)
        # broadcast_buffers=False: DDP must not copy rank 0's pattern over the
        # others, or the test could not fail.
        ddp = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        dst = DynamicSparsity(model, optimizer, method, total_steps=12, update_every=3, seed=123,
                              stop_fraction=1.0)
        data = torch.Generator().manual_seed(100 + rank)  # different data per rank
        resized = 0
        for _ in range(12):
            x = torch.randn(5, 4, 6, generator=data)
            optimizer.zero_grad()
            ddp(x)[0].pow(2).mean().backward()
            optimizer.step()
            if dst.step() and dst.storage_resized:
                # SNFS moved nnz between layers: DDP's buckets follow the new shapes.
                # Release the old reducer before building the new one, and do not
                # sync anything at init (each rank keeps its own pattern).
                ddp = None
                ddp = torch.nn.parallel.DistributedDataParallel(model, init_sync=False, **NO_BUFFER_SYNC)
                resized += 1
        assert dst.updates == 3
        assert (resized > 0) == (method == "snfs"), resized
        verified = dst.verify_ranks()
        torch.save({"state": model.state_dict(), "verified": verified, "checksum": dst.pattern_checksum()},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed gloo missing")
@pytest.mark.parametrize("method", ["st-rnn", "rigl", "snfs"])
def test_ranks_end_with_identical_patterns_and_values(tmp_path, method):
    context = mp.start_processes(_worker, args=(_free_port(), str(tmp_path), method), nprocs=WORLD_SIZE, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + TIME_LIMIT_S
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail(f"distributed training did not finish within {TIME_LIMIT_S} s")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    assert all(r["verified"] for r in results)
    assert results[0]["checksum"] == results[1]["checksum"]
    first, second = results[0]["state"], results[1]["state"]
    assert first.keys() == second.keys()
    changed = False
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, second[key]), key
    # The patterns did move during training (else identity would be trivial).
    torch.manual_seed(0)
    from sparse_kernels import SparseLSTM
    initial = SparseLSTM(6, 8, num_layers=2, density=0.3).state_dict()
    changed = any(not torch.equal(initial[k], first[k]) for k in first if k.endswith("col_idx"))
    assert changed
