"""anchorkit_train: train, evaluate and export compact dense detectors (ATSS, FreeAnchor,
max-IoU RetinaNet, Pseudo-IoU, learned anchors) for anchorkit.

Numerics follow mmdetection (2.28 / 3.3) and the method papers; each module and function
names its upstream file.
"""
