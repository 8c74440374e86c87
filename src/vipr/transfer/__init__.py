"""Downstream transfer of any vipr backbone: object detection (Faster R-CNN, RetinaNet), instance
segmentation (Mask R-CNN) and semantic segmentation (FCN, DeepLab's ASPP), built from torchvision's
detection and segmentation parts over a backbone's stage maps. ``vipr.transfer.models`` is the entry
point (``create_transfer_model(kind, backbone, num_classes, image_size)``, ``list_transfer_models()``,
``TASK_KINDS``); ``vipr.transfer.norm`` sets the backbone's batch norms and frozen stages first
(trainable synchronised BN, nothing frozen, by default: the MoCo transfer protocol).
"""
