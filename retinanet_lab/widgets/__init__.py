"""The classroom's interactive explorers (ipywidgets). Each is a plain Python object: set its controls and
read its derived state in a test or a script; display it in JupyterLab, Notebook 7 or Voilà.

    FocalLossExplorer      FL against CE for any γ and α (Figure 1), the modulating factor, the gradient
    HardExampleExplorer    Figure 4 on real anchors; where the loss goes under CE, α-CE, OHEM and FL
    AnchorExplorer         anchors, matching and coverage; move a box and watch the assignment
    ArchitectureView       shapes and parameters per level and subnet; the prior-probability bias
    DetectionExplorer      live detections with score threshold, NMS IoU and per-level heat maps
    LogitsToDetections     threshold -> top-k -> decode -> NMS, stage by stage
    TrainingMonitor        a short fit with live curves, AP and detections; Start and Stop
"""

from .anchors import AnchorExplorer
from .architecture import ArchitectureView
from .detections import DetectionExplorer, LogitsToDetections
from .focal import FocalLossExplorer
from .hard_examples import HardExampleExplorer
from .training import TrainingMonitor

__all__ = ["AnchorExplorer", "ArchitectureView", "DetectionExplorer", "FocalLossExplorer", "HardExampleExplorer",
           "LogitsToDetections", "TrainingMonitor"]
