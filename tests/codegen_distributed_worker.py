"""One rank of tests/test_codegen_distributed.py: the reference GPT set up by
a generated module, trained under DDP or FSDP2 (fully_shard) on gloo over
127.0.0.1, checkpointed halfway and resumed in a fresh model.

    python tests/codegen_distributed_worker.py MODE GENERATED.py PORT RANK OUT.json
"""

import importlib.util
import io
import json
import sys

import torch
import torch.distributed as dist

from mupspec.empirical.gpt import GPT, GPTConfig, batches, loss

STEPS, SAVE_AT, BATCH, LR = 6, 3, 8, 3e-3
CONFIG = dict(vocab=32, block_size=8, n_layers=2, n_heads=2, tie="wte")


def load(path):
    spec = importlib.util.spec_from_file_location("generated_for_ddp", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the hook classes pickle by module name
    spec.loader.exec_module(module)
    return module


def setup(P, mode, init="rescale"):
    """(model as trained, the plain model, optimizer) with the generated module's plan."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(d_model=64, **CONFIG))
    base = GPT(GPTConfig(d_model=16, **CONFIG))
    plan = P.parametrize(model, base, optimizer="adamw", init=init)
    if mode == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard
        for block in model.transformer.h:
            fully_shard(block)
        wrapped = fully_shard(model)
    opt = P.make_optimizer(model, plan, lr=LR, weight_decay=0.1)  # after sharding: groups hold the sharded params
    return wrapped, model, opt


def step(wrapped, opt, x, y, rank):
    half = x.shape[0] // 2
    value = loss(wrapped, x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half])
    opt.zero_grad()
    value.backward()
    opt.step()
    total = value.detach().clone()
    dist.all_reduce(total)
    return total.item() / 2


def state(model, opt, mode):
    if mode == "ddp":
        return {"model": model.state_dict(), "opt": opt.state_dict()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    model_state, opt_state = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    return {"model": model_state, "opt": opt_state}


def restore(model, opt, saved, mode):
    if mode == "ddp":
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
    set_state_dict(model, opt, model_state_dict=saved["model"], optim_state_dict=saved["opt"],
                   options=StateDictOptions(full_state_dict=True))


def main():
    mode, path, port, rank, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        P = load(path)
        data = batches(GPTConfig(d_model=64, **CONFIG), BATCH, STEPS, seed=1)
        wrapped, model, opt = setup(P, mode)
        losses, buffer = [], None
        for i, (x, y) in enumerate(data):
            if i == SAVE_AT:  # through bytes, as a checkpoint file would (state_dict tensors alias the live ones)
                buffer = io.BytesIO()
                torch.save(state(model, opt, mode), buffer)
            losses.append(step(wrapped, opt, x, y, rank))
        wrapped, model, opt = setup(P, mode, init="none")  # a fresh process would do the same
        buffer.seek(0)
        restore(model, opt, torch.load(buffer, weights_only=False), mode)
        resumed = [step(wrapped, opt, x, y, rank) for x, y in data[SAVE_AT:]]
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"losses": losses, "resumed": resumed}, f)
        dist.barrier()  # both ranks done before either tears gloo down (else a rank may abort at exit)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
