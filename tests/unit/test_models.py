import pytest

from moatforge.errors import MoatforgeError
from moatforge.models import resolve_model


def test_hub_id_unreachable_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MoatforgeError, match="could not be fetched from the Hugging Face hub"):
        resolve_model("acme-corp/definitely-not-a-model")


def test_local_dir(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()


def test_tiny_model_uses_real_vocabulary(tiny_model_dir, tokenizer):
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tiny_model_dir).vocab_size == len(tokenizer)
