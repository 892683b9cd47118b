"""Curating a collection: likely label mistakes (confident learning on out-of-fold probe
probabilities), near-duplicates and train/test leakage (a vector self-join through LanceDB),
a cached 2-D embedding map, review decisions kept in a sidecar, ImageNet-label groups and
export. Pure Python: the dashboard and the CLI build on it."""
