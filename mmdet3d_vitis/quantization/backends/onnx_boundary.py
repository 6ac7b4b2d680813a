"""int8 (and NHWC) boundaries of an exported QDQ ONNX subgraph.

A DPU subgraph takes and returns int8 tensors in NHWC layout; the CPU glue
writes its input and reads its output in those units (the board's C++ glue
scatters the pillar encoder's int8 rows straight into the BEV subgraph's
int8 input).  :func:`export_subgraph_onnx` writes float boundaries (a
``QuantizeLinear`` right after each input, a ``DequantizeLinear`` before
each output); :func:`set_int8_boundaries` rewrites chosen boundaries of
such a file to the DPU's form:

* an input that feeds a ``QuantizeLinear`` becomes that int8 tensor itself
  (the ``QuantizeLinear`` is dropped; ``NHWC`` adds a ``Transpose`` to the
  graph's NCHW);
* an output produced by a ``DequantizeLinear`` (possibly through a
  ``MaxPool``, which commutes with it) becomes the int8 tensor before it
  (``NHWC``: transposed from NCHW).

The file's metadata ``mmdet3d_vitis.io`` records every boundary (dtype,
layout, fix position); :func:`encode_inputs` / :func:`decode_outputs`
convert float NCHW tensors to and from that form, so checks written for
float boundaries (the deploy check) run unchanged on the rewritten file.
"""
import json
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np

from mmdet3d_vitis.errors import UserInputError
from mmdet3d_vitis.fileio import atomic_write

__all__ = ['IO_META_KEY', 'LAYOUTS', 'set_int8_boundaries', 'read_io_spec',
           'encode_inputs', 'decode_outputs']

IO_META_KEY = 'mmdet3d_vitis.io'
LAYOUTS = ('NCHW', 'NHWC')
_TO_NHWC = (0, 2, 3, 1)
_TO_NCHW = (0, 3, 1, 2)


def _consumers(graph, name: str) -> list:
    return [n for n in graph.node if name in n.input]


def _producer(graph, name: str):
    return next((n for n in graph.node if name in n.output), None)


def _fix_pos_of(graph, scale_name: str) -> int:
    from onnx import numpy_helper
    init = {t.name: t for t in graph.initializer}
    if scale_name in init:
        value = numpy_helper.to_array(init[scale_name])
    else:
        const = _producer(graph, scale_name)
        if const is None or const.op_type != 'Constant':
            raise UserInputError(f'scale {scale_name!r} is not a constant')
        value = numpy_helper.to_array(const.attribute[0].t)
    scale = float(np.asarray(value).reshape(-1)[0])
    fix_pos = -int(round(np.log2(scale)))
    if 2.0**-fix_pos != scale:
        raise UserInputError(f'scale {scale} is not a power of two')
    return fix_pos


def _set_type(value_info, elem_type: int, shape: Optional[list]) -> None:
    from onnx import helper
    value_info.type.CopyFrom(helper.make_tensor_type_proto(elem_type, shape))


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField('dim_value') else d.dim_param
            for d in value_info.type.tensor_type.shape.dim]


def _permute(shape: list, perm: Sequence[int]) -> list:
    return [shape[p] for p in perm]


def set_int8_boundaries(path: str, inputs: Dict[str, str],
                        outputs: Dict[str, str]) -> List[dict]:
    """Rewrite the QDQ ONNX file ``path`` in place (atomically) so that the
    named inputs / outputs are int8 tensors in the given layout (``'NCHW'``
    or ``'NHWC'``; the graph's own tensors are NCHW); the others stay
    float32 NCHW.  Returns the boundary description also stored in the
    file's metadata (``[{name, kind, dtype, layout, fix_pos, shape}]``)."""
    import onnx
    from onnx import TensorProto, helper

    for name, layout in list(inputs.items()) + list(outputs.items()):
        if layout not in LAYOUTS:
            raise UserInputError(
                f'{name}: layout must be one of {LAYOUTS}, got {layout!r}')
    model = onnx.load(path)
    graph = model.graph
    spec = OrderedDict()
    for vi in graph.input:
        spec[vi.name] = dict(name=vi.name, kind='input', dtype='float32',
                             layout='NCHW', fix_pos=None, shape=_dims(vi))
    for vi in graph.output:
        spec[vi.name] = dict(name=vi.name, kind='output', dtype='float32',
                             layout='NCHW', fix_pos=None, shape=_dims(vi))
    unknown = [n for n in list(inputs) + list(outputs) if n not in spec]
    if unknown:
        raise UserInputError(f'{path}: no graph input / output {unknown}')

    for vi in graph.input:
        if vi.name not in inputs:
            continue
        quant = [n for n in _consumers(graph, vi.name)
                 if n.op_type == 'QuantizeLinear']
        if len(quant) != 1 or len(_consumers(graph, vi.name)) != 1:
            raise UserInputError(
                f'{path}: input {vi.name!r} does not feed exactly one '
                'QuantizeLinear; cannot make it an int8 boundary')
        q = quant[0]
        fix_pos = _fix_pos_of(graph, q.input[1])
        int8_name = q.output[0]
        graph.node.remove(q)
        shape = spec[vi.name]['shape']
        if inputs[vi.name] == 'NHWC':
            shape = _permute(shape, _TO_NHWC)
            graph.node.insert(0, helper.make_node(
                'Transpose', [vi.name], [int8_name], perm=list(_TO_NCHW),
                name=f'{vi.name}_to_nchw'))
        else:
            for node in _consumers(graph, int8_name):
                for k, inp in enumerate(node.input):
                    if inp == int8_name:
                        node.input[k] = vi.name
        _set_type(vi, TensorProto.INT8, shape)
        spec[vi.name].update(dtype='int8', layout=inputs[vi.name],
                             fix_pos=fix_pos, shape=shape)

    for vi in graph.output:
        if vi.name not in outputs:
            continue
        last = _producer(graph, vi.name)
        pool = None
        if last is not None and last.op_type == 'MaxPool':
            pool, last = last, _producer(graph, last.input[0])
        if last is None or last.op_type != 'DequantizeLinear' or (
                pool is not None and len(_consumers(graph,
                                                    last.output[0])) != 1):
            raise UserInputError(
                f'{path}: output {vi.name!r} does not come from a '
                'DequantizeLinear; cannot make it an int8 boundary')
        fix_pos = _fix_pos_of(graph, last.input[1])
        int8_name = last.input[0]
        graph.node.remove(last)
        if pool is not None:  # max commutes with a positive scale
            pool.input[0] = int8_name
            int8_name = pool.output[0] = f'{vi.name}_int8_nchw'
        shape = spec[vi.name]['shape']
        if outputs[vi.name] == 'NHWC':
            shape = _permute(shape, _TO_NHWC)
            graph.node.append(helper.make_node(
                'Transpose', [int8_name], [vi.name], perm=list(_TO_NHWC),
                name=f'{vi.name}_to_nhwc'))
        else:
            graph.node.append(helper.make_node(
                'Identity', [int8_name], [vi.name],
                name=f'{vi.name}_int8'))
        _set_type(vi, TensorProto.INT8, shape)
        spec[vi.name].update(dtype='int8', layout=outputs[vi.name],
                             fix_pos=fix_pos, shape=shape)

    # the removed nodes' scale / zero-point constants are now unused
    used = {name for node in graph.node for name in node.input}
    for node in [n for n in graph.node if n.op_type == 'Constant'
                 and not any(o in used for o in n.output)]:
        graph.node.remove(node)
    entries = list(spec.values())
    meta = next((p for p in model.metadata_props if p.key == IO_META_KEY),
                None)
    if meta is None:
        meta = model.metadata_props.add()
        meta.key = IO_META_KEY
    meta.value = json.dumps(entries)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    atomic_write(str(path), lambda f: f.write(data))
    return entries


def read_io_spec(model_or_path) -> Optional[List[dict]]:
    """The boundary description :func:`set_int8_boundaries` stored in an
    ONNX model (a path or an ``onnx.ModelProto``), or None (float NCHW
    boundaries everywhere)."""
    import onnx
    model = (onnx.load(model_or_path, load_external_data=False)
             if isinstance(model_or_path, str) else model_or_path)
    for prop in model.metadata_props:
        if prop.key == IO_META_KEY:
            return json.loads(prop.value)
    return None


def _entries(spec: Optional[List[dict]], kind: str) -> List[Optional[dict]]:
    return [e for e in (spec or []) if e['kind'] == kind]


def encode_inputs(spec: Optional[List[dict]],
                  arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Float NCHW inputs in the form the model takes: int8 inputs are
    rounded onto their grid (half away from zero, as the glue does) and
    saturated, NHWC ones transposed."""
    entries = _entries(spec, 'input')
    out = []
    for i, a in enumerate(arrays):
        e = entries[i] if i < len(entries) else None
        a = np.asarray(a)
        if e is None or e['dtype'] != 'int8':
            out.append(np.ascontiguousarray(a, np.float32))
            continue
        v = a.astype(np.float64) * 2.0**e['fix_pos']
        q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -128, 127)
        q = q.astype(np.int8)
        if e['layout'] == 'NHWC':
            q = q.transpose(_TO_NHWC)
        out.append(np.ascontiguousarray(q))
    return out


def decode_outputs(spec: Optional[List[dict]],
                   arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
    """The model's outputs as float32 NCHW tensors (int8 ones times their
    scale, NHWC ones transposed back)."""
    entries = _entries(spec, 'output')
    out = []
    for i, a in enumerate(arrays):
        e = entries[i] if i < len(entries) else None
        if e is None or e['dtype'] != 'int8':
            out.append(a)
            continue
        v = a.astype(np.float32) * np.float32(2.0**-e['fix_pos'])
        if e['layout'] == 'NHWC':
            v = v.transpose(_TO_NCHW)
        out.append(np.ascontiguousarray(v))
    return out
