"""Plain numpy + onnxruntime re-implementation of the anchorkit detect pipeline.

This package is the test oracle of the Rust crate: every stage is written directly from
the upstream sources each module names (mmdetection 2.28 / 3.3, mmcv 1.7 / 2.1, mmdeploy,
onnxruntime, NanoDet), favouring obviousness over speed.

Modules:
- `spec`: the `anchorkit.detector/1` spec (ONNX metadata key `anchorkit.detector` or sidecar JSON).
- `preprocess`: decode (cv2, EXIF), resize rules with mmdet rounding, normalize, pad.
- `priors`: mmdet `AnchorGenerator` anchors, explicit anchors, points.
- `coders`: `delta2bbox`, `distance2bbox`, GFL distribution integral.
- `nms`: mmcv `batched_nms` (f32 offset trick) and onnxruntime `NonMaxSuppression` semantics.
- `postprocess`: the mmdet >= 2.18 rule, the mmdeploy end2end rule and the mmdet <= 2.17 rule.
- `detect`: CLI writing the same JSONL as `anchorkit detect --jsonl`.
- `coco_ap`: pycocotools AP of such a JSONL file.
"""
