"""FusedGoogLeNet under DistributedDataParallel (2 CPU processes, gloo), torch.compile of the
wrapped model, FSDP2, and state dicts moving between reference, fused and wrapped models."""
import os
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from googlenet_fused import FusedGoogLeNet, GoogLeNet, ops

pytestmark = pytest.mark.skipif(not (dist.is_available() and ops.extension_available()),
                                reason="needs torch.distributed and the extension")

IMAGE, CLASSES, BATCH = (3, 48, 48), 6, 4


def _model(seed=0):
    torch.manual_seed(seed)
    net = FusedGoogLeNet(IMAGE, n_classes=CLASSES, backend="native").train()
    for m in net.modules():  # no dropout: per-rank masks cannot equal one combined-batch mask
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return net


def _data():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, *IMAGE, generator=gen), torch.randint(0, CLASSES, (BATCH,),
                                                                     generator=gen)


def _step(model, x, y):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()


def _worker(rank, world, init_file, out_dir, mode):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        x, y = _data()
        per_rank = BATCH // world
        x, y = x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]
        net = _model()
        if mode == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            fully_shard(net)
            _step(net, x, y)
            grads = {n: p.grad.full_tensor() for n, p in net.named_parameters()}
        else:
            wrapped = nn.parallel.DistributedDataParallel(net)
            if mode == "ddp-compile":
                wrapped = torch.compile(wrapped)
            _step(wrapped, x, y)
            grads = {n: p.grad for n, p in net.named_parameters()}
        if rank == 0:
            torch.save(grads, os.path.join(out_dir, f"{mode}.pt"))
            if mode == "ddp":
                torch.save(wrapped.state_dict(), os.path.join(out_dir, "ddp_state.pt"))
    finally:
        dist.destroy_process_group()


def _single_process_grads():
    net = _model()
    _step(net, *_data())
    return {n: p.grad for n, p in net.named_parameters()}


def _run(mode, tmp_path):
    # One retry with a fresh rendezvous file: gloo's rendezvous on a loaded 2-core machine has
    # failed once in many runs here (not reproduced); a real error fails both attempts.
    for attempt in range(2):
        try:
            mp.spawn(_worker, args=(2, str(tmp_path / f"init{attempt}"), str(tmp_path), mode),
                     nprocs=2)
            break
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            if attempt == 1:
                raise
            warnings.warn(f"{mode}: first attempt failed, retrying: {exc}")
    got = torch.load(tmp_path / f"{mode}.pt")
    expected = _single_process_grads()
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f"{mode} {name}: {m}")


@pytest.mark.slow
def test_ddp_gradients_equal_single_process_on_the_combined_batch(tmp_path):
    _run("ddp", tmp_path)
    state = torch.load(tmp_path / "ddp_state.pt")  # DDP's keys: "module." + the reference's
    reference = GoogLeNet(IMAGE, n_classes=CLASSES)
    assert list(state) == ["module." + k for k in reference.state_dict()]
    nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "module.")
    reference.load_state_dict(state, strict=True)
    for a, b in zip(reference.state_dict().values(), _model().state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_ddp_compiled(tmp_path):
    _run("ddp-compile", tmp_path)


def _fsdp2_on_cpu():
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _fsdp2_on_cpu(), reason="this torch has no FSDP2 fully_shard")
def test_fsdp2_fully_shard(tmp_path):
    _run("fsdp2", tmp_path)


def test_state_dicts_move_between_reference_fused_and_wrapped():
    reference = GoogLeNet(IMAGE, n_classes=CLASSES)
    fused = FusedGoogLeNet(IMAGE, n_classes=CLASSES)
    fused.load_state_dict(reference.state_dict(), strict=True)
    compiled = torch.compile(fused)  # wrapping adds a prefix to the keys, nothing else
    assert [k.removeprefix("_orig_mod.") for k in compiled.state_dict()] == list(
        reference.state_dict())
    back = GoogLeNet(IMAGE, n_classes=CLASSES)
    back.load_state_dict(compiled._orig_mod.state_dict(), strict=True)
    nn.modules.utils.consume_prefix_in_state_dict_if_present(
        state := compiled.state_dict(), "_orig_mod.")
    back.load_state_dict(state, strict=True)
    for a, b in zip(back.parameters(), reference.parameters()):
        assert torch.equal(a, b)
