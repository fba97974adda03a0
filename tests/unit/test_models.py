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


def test_row_major_output_head_keeps_the_weights_logits_and_greedy_tokens(tiny_model_dir):
    import torch

    from moatforge.models import count_params, load_model, row_major_output_head

    plain = load_model(tiny_model_dir).eval()
    fast = row_major_output_head(load_model(tiny_model_dir).eval())
    assert type(fast.get_output_embeddings()).__name__ == "RowMajorHead"
    assert fast.get_output_embeddings().weight is fast.get_input_embeddings().weight  # the tie survives
    assert count_params(fast) == count_params(plain)
    ids = torch.randint(0, 2000, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(fast(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-5)
        a = fast.generate(ids, max_new_tokens=8, do_sample=False)
        b = plain.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(a, b)


def test_row_major_output_head_leaves_a_head_with_a_bias_alone(tiny_model_dir):
    import torch

    from moatforge.models import load_model, row_major_output_head

    model = load_model(tiny_model_dir)
    weight = model.get_output_embeddings().weight
    model.set_output_embeddings(torch.nn.Linear(weight.shape[1], weight.shape[0], bias=True))
    head = model.get_output_embeddings()
    assert row_major_output_head(model).get_output_embeddings() is head
