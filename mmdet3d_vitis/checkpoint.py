"""Checkpoint loading on torch >= 2.6 without turning off ``weights_only``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7
calls plain ``torch.load``. Checkpoints that mmengine's ``CheckpointHook``
writes then fail to load: the message hub stores ``HistoryBuffer`` objects
(numpy arrays inside) and ``HistoryBuffer.__getstate__`` pickles its
statistics methods as ``getattr(HistoryBuffer, 'mean')``.

Instead of ``weights_only=False`` (which would run arbitrary pickles a user
points a tool at), :func:`register_checkpoint_safe_globals` widens torch's
allow-list by exactly what those checkpoints contain: ``HistoryBuffer``, the
numpy array/scalar reconstructors and numeric dtypes, and a ``getattr`` that
only resolves ``HistoryBuffer``'s own statistics methods. Anything else still
raises torch's ``UnpicklingError``.
"""
import os.path as osp
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .errors import UserInputError

_HISTORY_BUFFER_METHODS = ('min', 'max', 'mean', 'current')
_registered = False


class CheckpointError(UserInputError):
    """A checkpoint is missing, unreadable or belongs to another model."""


def _history_buffer_getattr(obj, name: str):
    """Stand-in for ``builtins.getattr`` during weights-only unpickling."""
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'refusing getattr({obj!r}, {name!r}) in a checkpoint: only '
        f'HistoryBuffer statistics methods are allowed')


def _numpy_safe_globals() -> List:
    numeric = [
        getattr(np.dtypes, name) for name in dir(np.dtypes)
        if name.endswith('DType') and name not in ('ObjectDType', 'VoidDType')
    ]
    return [
        np.core.multiarray._reconstruct, np.core.multiarray.scalar,
        np.ndarray, np.dtype
    ] + numeric


def register_checkpoint_safe_globals() -> None:
    """Allow mmengine checkpoints under ``torch.load(weights_only=True)``."""
    global _registered
    if _registered:
        return
    torch.serialization.add_safe_globals(
        [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')] +
        _numpy_safe_globals())
    _registered = True


def load_checkpoint_file(path: str) -> Dict:
    """Load a checkpoint weights-only, with errors that name the file."""
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    register_checkpoint_safe_globals()
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise CheckpointError(
            f'cannot load checkpoint {path}: {type(exc).__name__}: '
            f'{str(exc).splitlines()[0] if str(exc) else ""}') from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path} does not hold a state dict')
    return ckpt


def _state_dict_of(ckpt: Dict) -> Dict[str, torch.Tensor]:
    state = ckpt.get('state_dict', ckpt)
    # DataParallel / DDP prefixes, as mmengine strips them too.
    return {k[7:] if k.startswith('module.') else k: v
            for k, v in state.items() if isinstance(v, torch.Tensor)}


def check_checkpoint_matches(model: torch.nn.Module,
                             path: str,
                             ignore_prefixes: Iterable[str] = ()) -> Dict:
    """Raise :class:`CheckpointError` unless ``path`` fits ``model``.

    mmengine's ``load_checkpoint`` only warns on missing or unexpected keys,
    so a checkpoint trained for another detector would silently evaluate a
    mostly random model. This compares names and shapes first and lists what
    differs. Returns the loaded checkpoint dict.
    """
    ckpt = load_checkpoint_file(path)
    state = _state_dict_of(ckpt)
    own = {k: v for k, v in model.state_dict().items()
           if not any(k.startswith(p) for p in ignore_prefixes)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}'
        for k, v in own.items() if k in state and state[k].shape != v.shape)
    if missing or unexpected or mismatched:
        trained_for = _trained_config_name(ckpt)
        lines = [f'checkpoint {path} does not match the model built from '
                 f'the config' +
                 (f' (it was trained with {trained_for})'
                  if trained_for else '') + ':']
        for title, items in (('missing in checkpoint', missing),
                             ('not in model', unexpected),
                             ('shape mismatch', mismatched)):
            if items:
                shown = ', '.join(items[:5])
                more = (f' ... (+{len(items) - 5} more)'
                        if len(items) > 5 else '')
                lines.append(f'  {len(items)} {title}: {shown}{more}')
        raise CheckpointError('\n'.join(lines))
    return ckpt


def _trained_config_name(ckpt: Dict) -> Optional[str]:
    meta = ckpt.get('meta') or {}
    for key in ('experiment_name', 'config_name'):
        if isinstance(meta.get(key), str):
            return meta[key]
    return None
