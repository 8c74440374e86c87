from vipr.models.backbones import TIMM_PATTERN, Backbone, create_backbone, list_backbones, register_backbone

__all__ = ["TIMM_PATTERN", "Backbone", "create_backbone", "list_backbones", "register_backbone"]
