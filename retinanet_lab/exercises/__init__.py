"""Exercises with automatic checks: write the lesson's function yourself, then `check_...` it.

    def my_iou(boxes1, boxes2): ...
    print(check_iou(my_iou))           # what is wrong, on which case, and which mistake it looks like

Each check runs the student's function on hand-made cases that move one thing at a time (each with its own
hint), then on N > 1 and random cases against the package's own functions (themselves tested against
torchvision and pycocotools). When an answer equals what a typical mistake gives, the hint names that mistake
(and `CheckResult.mistake` its id, which the mutation suite in tests/ reads). The solutions are in the
teacher's edition of the lessons (`retinanet-lab lessons DIR --teacher`).

    lesson 01  boxes.py           check_iou, check_encode_boxes, check_decode_boxes
    lesson 02  focal.py           check_focal_loss
    lesson 03  anchors.py         check_anchor_shapes, check_assign_anchors
    lesson 04  training_signal.py check_ohem
    lesson 05  training_signal.py check_prior_bias, check_first_loss
    lesson 06  inference.py       check_select_candidates, check_nms
    lesson 07  evaluation.py      check_average_precision
    lesson 08  training.py        check_normalized_loss
    lesson 09  heads.py           check_class_heatmap
    lesson 10  fine_tuning.py     check_new_classifier
"""

from ._check import CheckResult
from .anchors import check_anchor_shapes, check_assign_anchors
from .boxes import check_decode_boxes, check_encode_boxes, check_iou
from .evaluation import check_average_precision
from .fine_tuning import check_new_classifier
from .focal import check_focal_loss
from .heads import check_class_heatmap
from .inference import check_nms, check_select_candidates
from .training import check_normalized_loss
from .training_signal import check_first_loss, check_ohem, check_prior_bias

__all__ = ["CheckResult", "check_iou", "check_encode_boxes", "check_decode_boxes", "check_focal_loss", "check_anchor_shapes",
           "check_assign_anchors", "check_ohem", "check_prior_bias", "check_first_loss", "check_select_candidates", "check_nms",
           "check_average_precision", "check_normalized_loss", "check_class_heatmap", "check_new_classifier"]
