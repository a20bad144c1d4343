"""The generated setup under DDP and FSDP2 (fully_shard), 2 processes, gloo
over 127.0.0.1: losses equal one process's on the same global batch (to
float tolerance), and a checkpoint saved halfway resumes exactly. Nothing
is stored on parameters, so nothing is lost in wrapping or sharding
(microsoft/mup's infshape attributes are)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mupspec.codegen import generate
from mupspec.empirical.gpt import GPTConfig, batches, loss
from mupspec.resolve import load_spec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import codegen_distributed_worker as worker  # noqa: E402

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_process(P):
    """The same training in one process on the full batch."""
    import torch.distributed as dist
    wrapped_losses = []
    data = batches(GPTConfig(d_model=64, **worker.CONFIG), worker.BATCH, worker.STEPS, seed=1)
    torch.manual_seed(0)
    from mupspec.empirical.gpt import GPT
    model = GPT(GPTConfig(d_model=64, **worker.CONFIG))
    plan = P.parametrize(model, GPT(GPTConfig(d_model=16, **worker.CONFIG)), optimizer="adamw")
    opt = P.make_optimizer(model, plan, lr=worker.LR, weight_decay=0.1)
    for x, y in data:
        value = loss(model, x, y)
        opt.zero_grad()
        value.backward()
        opt.step()
        wrapped_losses.append(value.item())
    assert not dist.is_initialized()
    return wrapped_losses


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_train_like_one_and_resume(mode, tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    path = tmp_path / "generated_t8.py"
    path.write_text(generate(load_spec("specs/mup_table8.mup"), "specs/mup_table8.mup"), encoding="utf-8")
    out, port = tmp_path / "out.json", free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "codegen_distributed_worker.py"), mode, str(path),
                               str(port), str(rank), str(out)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    logs = [r.communicate(timeout=300)[0] for r in ranks]
    assert all(r.returncode == 0 for r in ranks), "\n".join(logs)
    result = json.loads(out.read_text())
    expected = one_process(worker.load(str(path)))
    assert result["losses"][-1] < result["losses"][0]
    torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert result["resumed"] == pytest.approx(result["losses"][worker.SAVE_AT:], rel=1e-6, abs=1e-7)
