"""The data pipeline: lazy volume sources, augmentation, batch creators.

Volumes are stored ``(z, y, x)`` (channel first when present); batches come in the
network's axis order. This package imports :mod:`elektronn2.neuromancer` only for
node shapes.
"""
from .augmentation import (
                           WarpParams,
                           add_noise,
                           blur,
                           grey_augment,
                           random_erasing,
                           random_transform,
                           warp_linear,
                           warp_nearest,
)
from .batchcreator import BatchCreatorImage
from .cnndata import border_treatment, greyAugment
from .debug import save_batch_picture
from .derived import BoundaryLabels, MappedLabels, SubVolume
from .knossos import KnossosSource, read_knossos_conf, write_knossos_dataset
from .labels import ids2affinities, ids2barriers, nhood_targets
from .mnist import MNISTData, read_idx
from .sources import ArraySource, HDF5Source, NpySource, VolumeSource, ZarrSource, open_source
from .traindata import Data, PianoData, PianoData_perc
from .workers import BackgroundBatches, BatchStats, WorkerError

__all__ = ['ArraySource', 'BatchCreatorImage', 'BoundaryLabels', 'HDF5Source', 'KnossosSource',
           'MNISTData', 'MappedLabels', 'NpySource', 'SubVolume', 'VolumeSource',
           'WarpParams', 'ZarrSource',
           'add_noise', 'blur', 'grey_augment', 'ids2affinities', 'ids2barriers',
           'nhood_targets', 'open_source', 'random_erasing', 'random_transform', 'read_idx',
           'save_batch_picture', 'BackgroundBatches', 'BatchStats', 'WorkerError',
           'read_knossos_conf', 'warp_linear', 'warp_nearest', 'write_knossos_dataset',
           'Data', 'PianoData', 'PianoData_perc', 'border_treatment', 'greyAugment']
