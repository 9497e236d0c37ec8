"""The seed plan: which shapes images each use draws, so that no image is ever used for two things.

`ShapesDataset(n, seed)[i]` is fixed by (seed, i): two datasets of different seeds share no image. Training uses
small seeds (the run's `seed`, 0 by default: 0, 1, 2 ...); every other use adds its own offset below, a million
apart, so that as long as training seeds stay under 1,000,000 no validation, evaluation, demo, lesson, widget or
test image is a training image, and no two of those uses see the same images:

    TRAIN        0          training images (`retinanet-lab train`, the classroom model, the training widget)
    VALIDATION   1,000,000  validation during training, and the classroom model's recorded score (assets/)
    EVALUATION   2,000,000  `retinanet-lab eval` on shapes
    DEMO         3,000,000  `retinanet-lab demo`: fresh images the classroom model has never seen
    EXPLORE      4,000,000  images the lessons and widgets look inside (anchors and matching, the architecture)
    DETECTIONS   5,000,000  the detection explorer's sample images
    HARD         6,000,000  the hard-example explorer's images
    TEST         7,000,000  the tests' score of the shipped classroom model
    LESSON_EVAL  8,000,000  the evaluation lesson's images

A command that takes `--seed s` uses `offset + s`: another set of images of the same kind.
"""

__all__ = ["TRAIN", "VALIDATION", "EVALUATION", "DEMO", "EXPLORE", "DETECTIONS", "HARD", "TEST", "LESSON_EVAL"]

TRAIN = 0
VALIDATION = 1_000_000
EVALUATION = 2_000_000
DEMO = 3_000_000
EXPLORE = 4_000_000
DETECTIONS = 5_000_000
HARD = 6_000_000
TEST = 7_000_000
LESSON_EVAL = 8_000_000
