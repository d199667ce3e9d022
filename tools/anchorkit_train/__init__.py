"""anchorkit_train: train, evaluate and export compact dense detectors (ATSS, FreeAnchor,
max-IoU RetinaNet, Pseudo-IoU, learned anchors) for anchorkit.

Numerics follow `reference/mmdet-inference.md` (sections cited per function); upstream
sources are the mmdetection files named there.
"""
