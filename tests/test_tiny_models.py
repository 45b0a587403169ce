"""The tiny fixture models build offline and run a forward pass."""

import pytest
import tiny_models
import torch


@pytest.mark.parametrize("name", sorted(tiny_models.TRANSFORMERS))
def test_tiny_transformer_runs_forward(name):
    model = tiny_models.TRANSFORMERS[name]()
    with torch.no_grad():
        out = model(**tiny_models.token_batch(name))
    assert torch.isfinite(out.logits).all()


def test_tiny_convnet_runs_forward():
    model = tiny_models.convnet()
    out = model(torch.randn(2, 3, 8, 8), torch.randn(2, 1, 4, 4, 4))
    assert out.shape == (2, 2)
