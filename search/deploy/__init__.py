"""From a Pareto point to a running split: the trained weights kept per accuracy key (:mod:`.store`), the deploy
bundle (:mod:`.bundle`: node.onnx, edge.onnx, interface.json, README.md), the wire protocol (:mod:`.protocol`)
and the reference runtime (:mod:`.edge` server, :mod:`.node` client)."""
