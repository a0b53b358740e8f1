"""Preview predictions during training: dense predictions of a fixed volume as PNG images.

``preview_data_path`` names an HDF5 file (first dataset) or ``(file, key)``; the
volume is (z, y, x) or (ch, z, y, x). ``preview_kwargs``: ``export_class`` ('all'
or a list of class indices) and ``max_z_pred`` (number of z slices predicted, the
central ones).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np

from ..data.sources import first_nonfinite, hdf5_dataset_keys, require_real
from ..errors import DataError

logger = logging.getLogger('elektronn2')


def load_preview_volume(spec) -> np.ndarray:
    """Read the preview volume (ch, z, y, x); clear errors for missing files or keys and for
    volumes that are not real numbers or hold NaN/Inf."""
    path, key = (spec[0], spec[1]) if isinstance(spec, (tuple, list)) else (spec, None)
    if not os.path.isfile(path):
        raise DataError(f"Preview file {path!r} (preview_data_path) does not exist")
    try:
        file = h5py.File(path, 'r')
    except OSError as err:
        raise DataError(f"Preview file {path!r} (preview_data_path) cannot be read as HDF5: "
                        f"{err}") from None
    with file as f:
        if key is None:
            keys = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
            if not keys:
                raise DataError(f"Preview file {path!r} has no top-level dataset; give "
                                f"preview_data_path = ({path!r}, 'key')")
            key = keys[0]
        if not isinstance(f.get(key), h5py.Dataset):
            raise DataError(f"Preview file {path!r} has no dataset {key!r}; its datasets are: "
                            f"{', '.join(hdf5_dataset_keys(f)) or '(none)'}")
        require_real(f"{path}:{key}", f[key].dtype, 'Preview volume')
        volume = f[key][()]
    if volume.ndim == 3:
        volume = volume[None]
    if volume.ndim != 4:
        raise DataError(f"Preview volume {path!r}:{key} has shape {volume.shape}; expected "
                        f"(z, y, x) or (ch, z, y, x)")
    bad = first_nonfinite(volume)
    if bad is not None:
        raise DataError(f"Preview volume {path!r}:{key} holds {volume[bad]} at (ch,z,y,x) {bad}; "
                        f"NaN/Inf cannot be predicted on")
    return volume


def central_slices(volume: np.ndarray, n_z: int, context: int) -> np.ndarray:
    """The central ``n_z`` slices plus ``context`` slices on each side (for 3-D nets)."""
    z = volume.shape[1]
    start = max((z - n_z) // 2 - context, 0)
    return volume[:, start:min(start + n_z + 2 * context, z)]


def save_preview(model, volume: np.ndarray, out_dir: Path, step: int,
                 export_class='all', max_z_pred: int = 5) -> list[Path]:
    """Predict ``volume`` densely and write one PNG per exported class (slices side by side)."""
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    node = model.prediction_node
    n_spatial = len(node.input_nodes[0].shape.spatial_axes)
    if n_spatial == 3:
        context = int(np.ceil(max(node.shape.offsets[0], 0)))
        raw = central_slices(volume, max_z_pred, context)
        pred = model.predict_dense(raw, pad_raw=True)
        pred = pred[:, context:context + max_z_pred] if raw.shape[1] > max_z_pred else pred
    else:
        raw = central_slices(volume, max_z_pred, 0)
        pred = model.predict_dense(raw, pad_raw=True)
    classes = range(pred.shape[0]) if export_class == 'all' else export_class
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for c in classes:
        n = pred.shape[1]
        fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), squeeze=False)
        for z in range(n):
            axes[0, z].imshow(pred[c, z], cmap='gray', vmin=0, vmax=1)
            axes[0, z].set_axis_off()
        fig.suptitle(f"class {c}, step {step}")
        target = out_dir / f"preview_step{step:09d}_class{c}.png"
        tmp = target.with_name(f".{target.name}.tmp.png")
        fig.savefig(tmp, dpi=72)
        plt.close(fig)
        os.replace(tmp, target)
        written.append(target)
    logger.info("Preview of step %d written to %s", step, out_dir)
    return written
