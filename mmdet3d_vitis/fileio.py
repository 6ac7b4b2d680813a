"""Writes that never leave a half-written file or folder behind."""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def atomic_write(path: str, write_fn: Callable) -> None:
    """Write ``path`` through ``write_fn(file_object)`` into a temporary file
    next to it, then ``os.replace`` it: readers never see a partial file and
    an error leaves any previous file untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        # mkstemp makes 0600 files; give the result what open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, 'wb') as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: str, obj: Any) -> None:
    """JSON with insertion order kept (quant_info.json lists tensors in
    graph order, as nndct does)."""
    data = (json.dumps(obj, indent=2) + '\n').encode()
    atomic_write(path, lambda f: f.write(data))


def _share_tree(path: str) -> None:
    """The permissions a plain ``mkdir`` / ``open`` would give (temporary
    folders are created 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    for root, _, files in os.walk(path):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


@contextmanager
def staged_dir(target: str) -> Iterator[str]:
    """Fill a temporary folder next to ``target`` (yielded); when the block
    ends without error it replaces ``target`` as a whole (renames: readers
    see the old folder or the new one, never a mix), otherwise it is removed
    and ``target`` is left as it was.

    Raises:
        FileExistsError: ``target`` exists and is not a folder.
    """
    target = os.path.abspath(target)
    if os.path.exists(target) and not os.path.isdir(target):
        raise FileExistsError(f'{target!r} exists and is not a folder')
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(target)
    stage = tempfile.mkdtemp(prefix=f'.{name}.staging-', dir=parent)
    try:
        yield stage
        _share_tree(stage)
        if os.path.isdir(target):
            old = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=parent)
            os.rename(target, os.path.join(old, 'old'))
            os.rename(stage, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
