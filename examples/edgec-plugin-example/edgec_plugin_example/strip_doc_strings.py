"""strip-doc-strings: drop doc strings from the model, its graphs, nodes and values.

    Node(doc_string=s) -> Node(doc_string="")

Doc strings can carry exporter stack traces worth kilobytes per node; deployment
artifacts do not need them.
"""

from dataclasses import dataclass, field
from typing import ClassVar

from edgec.passmgr import Pass, PassResult


@dataclass(frozen=True)
class StripDocStrings(Pass):
    """Remove doc strings from the model, graphs, nodes and values."""

    name: ClassVar[str] = "strip-doc-strings"
    keep_model_doc: bool = field(default=False,
                                 metadata={"help": "keep the model-level doc string"})

    def run(self, model, ctx) -> PassResult:
        removed = 0
        if model.doc_string and not self.keep_model_doc:
            model.doc_string = ""
            removed += 1
        for graph in model.all_graphs():
            if graph.doc_string:
                graph.doc_string = ""
                removed += 1
            values = [*graph.inputs, *graph.outputs]
            for node in graph:
                if node.doc_string:
                    node.doc_string = ""
                    removed += 1
                values.extend(node.outputs)
            for value in values:
                if value.doc_string:
                    value.doc_string = ""
                    removed += 1
        return PassResult(modified=removed > 0, stats={"doc-strings-removed": removed})
