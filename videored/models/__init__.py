"""Token-reducing ViTs: JointST TimeSformer (video) and DeiT (images) on one core."""
from .pretrained import LoadReport, load_pretrained, read_state_dict
from .registry import ARCHITECTURES, create_model, list_models, load_model_file, save_model_file
from .methods import METHODS, SELECTORS, get_method
from .vit import ReductionOutput, TokenReductionViT

__all__ = [
    "ARCHITECTURES", "LoadReport", "METHODS", "ReductionOutput", "SELECTORS", "TokenReductionViT",
    "create_model", "get_method", "list_models", "load_model_file", "load_pretrained", "read_state_dict",
    "save_model_file",
]
