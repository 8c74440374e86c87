"""Detection and segmentation data: COCO, Pascal VOC, mask folders and builtin:scenes, in one store.

``open_dense(src)`` decodes a source once into the dense store (store.py) and returns a
``DenseDataset`` whose splits index like a torch Dataset (types.py); ``dense_info`` is what
``vipr data info`` prints for them.
"""

from vipr.data.dense.sources import is_dense_source, open_dense
from vipr.data.dense.types import DenseDataset, DenseSample, DenseSplit

__all__ = ["DenseDataset", "DenseSample", "DenseSplit", "is_dense_source", "open_dense"]
