"""Sources of stages: the stage record and the one face every source shows, and everything that yields records:
the spec language and TOML, the filter bank, the chain, the shipped shapes model, ONNX graphs, input preparation,
training.  Imports ``base``, ``compute`` and ``io``."""
