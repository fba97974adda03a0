import pytest

from moatforge.config import TrainArgs
from moatforge.train.ds_config import build_deepspeed_config, lr_factor, total_steps


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_stage_and_batch(stage):
    cfg = build_deepspeed_config(TrainArgs(zero_stage=stage, micro_batch_size=3, grad_accum=2), 4, use_gpu=False)
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["train_batch_size"] == 24
    assert cfg["optimizer"]["params"]["torch_adam"] is True
    assert cfg["bf16"]["enabled"] is False


def test_gpu_uses_bf16_and_offload():
    cfg = build_deepspeed_config(TrainArgs(zero_stage=3, offload="optimizer+params"), 8, use_gpu=True)
    assert cfg["bf16"]["enabled"] is True
    zero = cfg["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert (
        "offload_param"
        not in build_deepspeed_config(TrainArgs(zero_stage=2, offload="optimizer"), 2, False)["zero_optimization"]
    )


def test_warmup_then_cosine():
    factors = [lr_factor(s, total_steps=10, warmup=2, min_ratio=0.1) for s in range(10)]
    assert factors[0] == pytest.approx(0.5) and factors[1] == pytest.approx(1.0)
    assert factors[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[2:], factors[3:], strict=False))
    assert lr_factor(10, 10, 2, 0.1) == pytest.approx(0.1)


def test_total_steps():
    assert total_steps(TrainArgs(max_steps=7), 1000) == 7
    assert total_steps(TrainArgs(epochs=2, micro_batch_size=4, grad_accum=2), 20) == 6
    assert total_steps(TrainArgs(micro_batch_size=4), 1) == 1
