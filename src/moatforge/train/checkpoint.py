"""DeepSpeed checkpoints that load without unpickling arbitrary objects.

DeepSpeed's own loader calls ``torch.load(weights_only=False)``, which would run any pickled code found in
storage. Resume swaps in a loader that uses ``weights_only=True`` and allows only the few plain types that
DeepSpeed's checkpoint format records (its config enums, fragment addresses, argparse namespaces); our own
bookkeeping (step, metrics so far) is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

STATE_FILE = "moatforge_state.json"
TAG = "ds"


def _allowed_globals() -> list:
    import argparse
    import collections

    allowed: list = [argparse.Namespace, collections.OrderedDict, collections.defaultdict, set, frozenset]
    try:
        from deepspeed.runtime.zero.config import ZeroStageEnum

        allowed.append(ZeroStageEnum)
    except ImportError:
        pass
    try:
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed.append(fragment_address)
    except ImportError:
        pass
    try:
        from deepspeed.runtime.fp16.loss_scaler import LossScaler

        allowed.append(LossScaler)
    except ImportError:
        pass
    return allowed


class _SafeLoad:
    """Stands in for the engine's checkpoint engine ``load`` with a weights-only unpickler."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def load(self, path, map_location=None):
        import torch

        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)


def save(engine, directory: Path, state: dict, rank: int, frozen_excluded: bool) -> None:
    engine.save_checkpoint(str(directory), tag=TAG, exclude_frozen_parameters=frozen_excluded)
    if rank == 0:
        (directory / STATE_FILE).write_text(json.dumps(state))


def load(engine, directory: Path, strict: bool) -> dict:
    original = engine.checkpoint_engine
    engine.checkpoint_engine = _SafeLoad(original)
    try:
        path, _ = engine.load_checkpoint(str(directory), tag=TAG, load_module_strict=strict)
    finally:
        engine.checkpoint_engine = original
    if path is None:
        raise RuntimeError(f"checkpoint in {directory} has no DeepSpeed state under tag {TAG!r}")
    return json.loads((directory / STATE_FILE).read_text())
