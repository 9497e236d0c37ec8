import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

CUDA = torch.cuda.is_available()


@pytest.fixture(params=["cpu"] + (["cuda"] if CUDA else []))
def device(request):
    return torch.device(request.param)


def canonical(det: dict) -> dict:
    """Detections in an order independent of how equal scores were tie-broken: by score, then box."""
    key = torch.stack([-det["scores"].double(), det["boxes"][:, 0].double(), det["boxes"][:, 1].double(),
                       det["labels"].double()], dim=1)
    order = sorted(range(key.shape[0]), key=lambda i: tuple(key[i].tolist()))
    return {k: v[order] for k, v in det.items()}
