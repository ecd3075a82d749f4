"""Contract tests, parametrized over the registries: registering a model, a dataset or a task puts
it under these.

* every model builds from its example kwargs and runs forward and backward on its example input,
  with finite outputs and finite gradients reaching every trainable parameter;
"""

from __future__ import annotations

import pytest
import torch

from emoexp.models import example_model, list_models


@pytest.fixture(autouse=True)
def _one_thread():
    # Two threads on a shared two-core machine are slower than one; one also fixes the result.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("name", list_models())
def test_model_forward_and_backward(name: str) -> None:
    model, example = example_model(name)
    model.train()
    out = model(example)
    outs = list(out.values()) if isinstance(out, dict) else [out]
    assert outs, f"{name}: no output"
    for o in outs:
        assert torch.isfinite(o).all(), f"{name}: non-finite output"
    # A random projection of the outputs, so no gradient cancels by symmetry.
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, f"{name}: nothing to train"
    for pname, p in trainable:
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
    # (a LoRA A matrix gets a zero gradient while its B starts at zero, so: non-zero somewhere)
    assert any(p.grad.abs().sum() > 0 for _, p in trainable), f"{name}: every gradient is zero"
