"""Per-layer quantization error (SQNR) of the calibrated DPU subgraphs.

For every quantized activation of a :class:`~.backends.graph.QuantSubgraph`
(the output of each DPU layer, after its fused activation), the
fake-quant value ``q`` is compared with the float value ``x`` of the same
node in the float subgraph (traced the same way, batch norms folded the
same way, so node names match), both fed the *same* float subgraph input:

    SQNR = 10 log10(sum x^2 / sum (x - q)^2)   [dB], over all frames

The error is the accumulated one (every upstream layer quantized too) within
a subgraph; the input of each subgraph is the float model's, so the
``bev`` figures do not include the pillar encoder's error.
"""
import copy
from collections import OrderedDict
from typing import Dict, List, Sequence

import math
import torch
from torch import fx

__all__ = ['subgraph_sqnr', 'model_sqnr']


class _Recorder(fx.Interpreter):
    """Runs a GraphModule keeping the outputs of the nodes in ``keep``."""

    def __init__(self, gm, keep):
        super().__init__(gm)
        self.keep = set(keep)
        self.values = {}

    def run_node(self, n):
        out = super().run_node(n)
        if n.name in self.keep:
            self.values[n.name] = out.detach()
        return out


def _float_graph(module):
    from .backends.graph import _DPUTracer, fold_batchnorm
    model = copy.deepcopy(module).eval()
    gm = fx.GraphModule(model, _DPUTracer().trace(model),
                        type(model).__name__)
    return fold_batchnorm(gm)


def subgraph_sqnr(float_module, qsub, inputs: Sequence[tuple]) -> List[dict]:
    """SQNR of every quantized activation of ``qsub`` (a QuantSubgraph)
    against ``float_module`` over ``inputs`` (argument tuples).

    Returns ``[dict(tensor, node, sqnr_db, signal_power, noise_power)]`` in
    graph order; ``sqnr_db`` is ``inf`` when the error is zero.
    """
    qgm = qsub.gm
    # QuantIdentity module -> tensor name of the activation it quantizes
    act = OrderedDict()
    for key, (kind, path) in qsub._tensors.items():
        if kind == 'act':
            act[path.split('.')[0]] = key
    qnodes = OrderedDict()  # quant node name -> (tensor, float node name)
    for node in qgm.graph.nodes:
        if node.op == 'call_module' and node.target in act:
            src = node.args[0]
            qnodes[node.name] = (act[node.target], src.name)
    fgm = _float_graph(float_module)
    fnames = {n.name for n in fgm.graph.nodes}
    missing = [f for _, f in qnodes.values() if f not in fnames]
    if missing:
        raise ValueError(f'{qsub.subgraph_name}: float graph lacks nodes '
                         f'{missing[:5]}')
    sig = {k: 0.0 for k in qnodes}
    err = {k: 0.0 for k in qnodes}
    qsub.eval()
    with torch.no_grad():
        for args in inputs:
            fr = _Recorder(fgm, [f for _, f in qnodes.values()])
            fr.run(*args)
            qr = _Recorder(qgm, qnodes)
            qr.run(*args)
            for name, (_, fname) in qnodes.items():
                x = fr.values[fname].double()
                q = qr.values[name].double()
                sig[name] += float((x * x).sum())
                err[name] += float(((x - q)**2).sum())
            del fr, qr
    rows = []
    for name, (key, fname) in qnodes.items():
        s, e = sig[name], err[name]
        db = math.inf if e == 0 else (
            -math.inf if s == 0 else 10 * math.log10(s / e))
        rows.append(OrderedDict(tensor=key, node=fname, sqnr_db=db,
                                signal_power=s, noise_power=e))
    return rows


def model_sqnr(qmodel, dataset, indices: Sequence[int]) -> Dict[str, list]:
    """:func:`subgraph_sqnr` of every subgraph of a
    :class:`~.quant_runner.QuantizedModel` on the frames ``indices`` (the
    float model's subgraph inputs); ``{subgraph: rows}``."""
    from .quant_runner import collect_subgraph_inputs
    qmodel.use('float')
    try:
        inputs = collect_subgraph_inputs(qmodel.model, dataset, indices)
    finally:
        qmodel.use('quant')
    return OrderedDict(
        (name, subgraph_sqnr(qmodel.float_subgraphs[name],
                             qmodel.qmods[name], inputs[name]))
        for name in qmodel.model.subgraph_names)
