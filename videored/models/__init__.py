"""Token-reducing ViTs: JointST TimeSformer (video) and DeiT (images) on one core."""
from .pretrained import LoadReport, load_pretrained, read_state_dict
from .registry import ARCHITECTURES, create_model, list_models, load_model_file, save_model_file
from .selectors import METHOD_SELECTORS, SELECTORS
from .vit import ReductionOutput, TokenReductionViT

__all__ = [
    "ARCHITECTURES", "LoadReport", "METHOD_SELECTORS", "ReductionOutput", "SELECTORS", "TokenReductionViT",
    "create_model", "list_models", "load_model_file", "load_pretrained", "read_state_dict",
    "save_model_file",
]
