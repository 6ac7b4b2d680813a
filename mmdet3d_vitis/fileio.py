"""Writes that never leave a half-written file behind."""
import json
import os
import tempfile
from typing import Any, Callable


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
