"""Training through an 8-bit or 4-bit (bitsandbytes) base on the CPU."""

import pytest
import torch
import train_models as tm
from safetensors.torch import load_file

from ia3engine import TrainSpec, train


@pytest.mark.parametrize("quantize", ["8bit", "4bit"])
def test_quantized_base_trains_the_vectors_on_cpu(tmp_path, quantize):
    # 64 features: bitsandbytes' 4-bit blocks need at least 64 inputs per layer
    model = tm.save_tiny("bert", tmp_path / "bert", hidden=64)
    data = tm.write_sentiment(tmp_path / "train.csv", 16)
    spec = TrainSpec(
        model=model,
        data=data,
        eval_data=data,
        steps=2,
        lr=0.1,
        batch_size=8,
        eval_every=0,
        max_length=16,
        quantize=quantize,
        device="cpu",
        out_dir=str(tmp_path / "adapter"),
    )
    result = train(spec)
    assert result.steps == 2 and "accuracy" in result.metrics
    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    vectors = [v for k, v in tensors.items() if k.endswith("ia3_l")]
    assert vectors and any(not torch.equal(v, torch.ones_like(v)) for v in vectors)
    assert any("classifier" in k for k in tensors)  # the head is saved, unquantized
