"""The class names an ONNX-ML classifier carries (LinearClassifier, TreeEnsembleClassifier, SVMClassifier,
ZipMap: `classlabels_strings` or their integer labels), for the graph output that holds its per-class scores.
scikit-learn classifiers converted by skl2onnx are such models: their `probabilities` output then answers
TF Serving's Classify and the V2 classification extension with the classes' names, not their indices.
"""

from __future__ import annotations

import onnx

ML_DOMAIN = "ai.onnx.ml"
# a classifier's outputs: its predicted labels, then the score of every class
_SCORES_OUTPUT = 1
# nodes between a classifier's scores and the graph's output that keep the columns in the classifier's order
_ORDER_KEEPING = {("", "Identity"), ("", "Cast"), (ML_DOMAIN, "Normalizer")}
_LABEL_ATTRIBUTES = ("classlabels_strings", "classlabels_ints", "classlabels_int64s")


def class_labels(graph: onnx.GraphProto) -> dict[str, tuple[str, ...]]:
    """Each graph output that holds a classifier's per-class scores, with the classifier's class names."""
    producers = {output: node for node in graph.node for output in node.output}
    found = {}
    for output in graph.output:
        labels = _labels_behind(output.name, producers)
        if labels:
            found[output.name] = labels
    return found


def _labels_behind(tensor: str, producers: dict[str, onnx.NodeProto]) -> tuple[str, ...] | None:
    for _ in range(len(producers) + 1):  # a walk back through the graph, which has no cycles
        node = producers.get(tensor)
        if node is None:
            return None
        kind = (node.domain, node.op_type)
        if node.domain == ML_DOMAIN and (node.op_type == "ZipMap" or (node.op_type.endswith("Classifier")
                                                                      and list(node.output).index(tensor)
                                                                      == _SCORES_OUTPUT)):
            return _names(node)
        if kind not in _ORDER_KEEPING:
            return None
        tensor = node.input[0]
    return None


def _names(node: onnx.NodeProto) -> tuple[str, ...] | None:
    for attribute in node.attribute:
        if attribute.name == "classlabels_strings" and attribute.strings:
            return tuple(label.decode("utf-8", "replace") for label in attribute.strings)
        if attribute.name in _LABEL_ATTRIBUTES and attribute.ints:
            return tuple(str(label) for label in attribute.ints)
    return None
