"""Look at an ``elektronn2-segment`` output with what it was made from.

The segmentation records its prediction (``elektronn2_segment`` attribute), the prediction
its raw data (``elektronn2_predict``); :func:`linked_sources` follows both, lazily.
``elektronn2-view SEGMENTATION.zarr`` (:func:`show`) opens them in napari where it is
installed, else in a neuroglancer page served on this machine
(:func:`view_in_neuroglancer`: the segmentation's OME-Zarr pyramid over HTTP, raw and
prediction read on demand), else in the matplotlib viewer (:func:`segmentation_layers`
reads the arrays into memory).
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .optional import import_optional
from .viewer import VolumeViewer, view_in_napari

#: the order layers are shown in
LAYERS = ('raw', 'prediction', 'segmentation')


class ChannelView:
    """Channel ``channel`` of a lazy (c, z, y, x) source as a lazy (z, y, x) array."""

    def __init__(self, source, channel: int):
        self.source, self.channel = source, channel
        self.shape = tuple(source.shape[1:])
        self.dtype = source.dtype

    def __getitem__(self, index) -> np.ndarray:
        return self.source[(self.channel,) + tuple(index)]


def _split_name(name: str) -> tuple[str, str | None]:
    """``(path, key)`` of a source name ``'path:key'`` or ``'path'`` (as sources print them)."""
    path, _, key = name.rpartition(':')
    if path and os.path.exists(path):
        return path, key
    return name, None


def linked_sources(path: str | os.PathLike) -> dict[str, tuple[Any, tuple[int, ...]]] | None:
    """Lazy (z, y, x) arrays of an ``elektronn2-segment`` output by name, each with the raw
    voxel where it starts: ``segmentation`` (level 0), ``prediction`` (the boundary channel
    it segmented) and ``raw`` (what the prediction was made from), those still where they
    were; None for other paths."""
    import zarr

    from ..data.sources import open_source
    from ..inference.blockwise_segmentation import MANIFEST_ATTR
    from ..inference.ome_zarr import level_key
    from ..inference.outputs import MANIFEST_ATTR as PREDICT_ATTR
    from ..inference.outputs import stored_attributes
    key = level_key(path)
    if key is None:
        return None
    group: Any = zarr.open_group(store=str(path), mode='r')
    found: dict[str, tuple[Any, tuple[int, ...]]] = {}
    manifest = dict(group.attrs).get(MANIFEST_ATTR)
    offset: tuple[int, ...] = (0, 0, 0)
    source_path, source_key = _split_name(manifest['input']['source']) if manifest else ('', None)
    if os.path.exists(source_path):
        prediction = open_source(source_path, source_key)
        attrs = stored_attributes(prediction)
        offset = tuple(int(v) for v in attrs.get('voxel_offset', (0, 0, 0)))
        if manifest['input']['nhood'] is None:
            found['prediction'] = (ChannelView(prediction, manifest['input']['channel'])
                                   if prediction.ndim == 4 else prediction, offset)
        recorded = attrs.get(PREDICT_ATTR, {})
        raw_name = (json.loads(recorded) if isinstance(recorded, str) else recorded).get('input')
        raw_path, raw_key = _split_name(raw_name or '')
        if raw_name and os.path.exists(raw_path):
            found['raw'] = (open_source(raw_path, raw_key), (0, 0, 0))
    found['segmentation'] = (group[key], offset)
    return {k: found[k] for k in LAYERS if k in found}


def segmentation_layers(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The :func:`linked_sources` as (z, y, x) arrays of the segmentation's box (raw cropped
    to it), read into memory; None for other paths."""
    sources = linked_sources(path)
    if sources is None:
        return None
    volume, offset = sources['segmentation']
    box = tuple(slice(o, o + n) for o, n in zip(offset, volume.shape))
    return {name: np.asarray(data[box if name == 'raw' else (slice(None),) * 3])
            for name, (data, _) in sources.items()}


class _CorsHandler(SimpleHTTPRequestHandler):
    """Static files for a neuroglancer page of another origin; quiet."""

    def end_headers(self) -> None:
        self.send_header('Access-Control-Allow-Origin', '*')
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


def serve_directory(directory: str | os.PathLike, bind_address: str = '127.0.0.1') -> str:
    """Serve ``directory`` over HTTP (with CORS) in a background thread; returns its URL."""
    server = ThreadingHTTPServer((bind_address, 0),
                                 functools.partial(_CorsHandler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://{bind_address}:{server.server_address[1]}"


def _grid(group) -> tuple[list[float], str]:
    """Voxel size (z, y, x) and neuroglancer unit of an OME-Zarr group's level 0."""
    from ..inference.ome_zarr import read_multiscales
    entry = read_multiscales(group) or {'datasets': [{'coordinateTransformations': [
        {'scale': [1, 1, 1]}]}], 'axes': [{}]}
    scale = entry['datasets'][0]['coordinateTransformations'][0]['scale']
    unit = entry['axes'][-1].get('unit')
    return [float(v) for v in scale[-3:]], {'nanometer': 'nm', 'micrometer': 'um'}.get(
        unit, unit or '')


def view_in_neuroglancer(path: str | os.PathLike, bind_address: str = '127.0.0.1'):
    """A neuroglancer page on this machine with an ``elektronn2-segment`` output (its OME-Zarr
    pyramid served over HTTP) and the prediction and raw data it was made from (read on
    demand); returns the ``neuroglancer.Viewer`` (``get_viewer_url()`` is the page)."""
    import zarr
    neuroglancer = import_optional('neuroglancer', 'neuroglancer',
                                   purpose='Viewing in a browser (neuroglancer)')
    path = Path(path).resolve()
    sources = linked_sources(path)
    if sources is None:
        raise DataError(f"{path} is not an OME-Zarr group (an output of elektronn2-segment)")
    scales, unit = _grid(zarr.open_group(store=str(path), mode='r'))
    space = neuroglancer.CoordinateSpace(names=['z', 'y', 'x'], units=unit, scales=scales)
    neuroglancer.set_server_bind_address(bind_address, 0)
    viewer = neuroglancer.Viewer()
    url = f"zarr://{serve_directory(path.parent, bind_address)}/{path.name}"
    with viewer.txn() as state:
        state.dimensions = space
        for name, (data, offset) in sources.items():
            if name == 'segmentation':
                state.layers[name] = neuroglancer.SegmentationLayer(source=url)
            else:
                state.layers[name] = neuroglancer.ImageLayer(source=neuroglancer.LocalVolume(
                    data, space, voxel_offset=list(offset)))
    return viewer


def _browser() -> str:
    """napari where installed, else neuroglancer where installed, else matplotlib."""
    for name in ('napari', 'neuroglancer'):
        if importlib.util.find_spec(name) is not None:
            return name
    return 'matplotlib'


def show(path: str, backend: str = 'auto', z: int | None = None) -> VolumeViewer | None:
    """Open an ``elektronn2-segment`` output: napari or neuroglancer (serving until Ctrl+C;
    returns None), or the matplotlib viewer (returned, to show or save)."""
    backend = _browser() if backend == 'auto' else backend
    if backend == 'neuroglancer':
        viewer = view_in_neuroglancer(path)
        print(f"neuroglancer: {viewer.get_viewer_url()}  (Ctrl+C ends)", flush=True)
        while True:
            time.sleep(3600)
    layers = segmentation_layers(path)
    if layers is None:
        raise DataError(f"{path} is not an OME-Zarr group (an output of elektronn2-segment)")
    if backend == 'napari':
        images = [k for k in ('raw', 'prediction') if k in layers] or ['segmentation']
        view_in_napari([layers[k] for k in images], [layers['segmentation']] +
                       [None] * (len(images) - 1), images)
        return None
    return matplotlib_viewer(layers, z)


def matplotlib_viewer(layers: dict[str, np.ndarray], z: int | None = None) -> VolumeViewer:
    """Raw (or the prediction) with the prediction and with the segmentation on top."""
    base = layers.get('raw', layers.get('prediction', layers['segmentation']))
    volumes, overlays, titles = [base], [layers['segmentation']], ['segmentation']
    if 'prediction' in layers and 'raw' in layers:
        volumes.insert(0, base)
        overlays.insert(0, layers['prediction'])
        titles.insert(0, 'prediction')
    return VolumeViewer(volumes, overlays, titles, z=z)
