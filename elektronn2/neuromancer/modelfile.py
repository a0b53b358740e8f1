"""The model file format: ``graph.json`` plus ``params.safetensors``.

A model is saved either as a directory holding the two files or as a zip archive
of them (any path that is not a directory). ``graph.json`` holds the format name
and version, the node descriptors in construction order (class name and
constructor arguments, parents by name) and the designations. Reading never
unpickles and never executes anything from the file: arguments are plain JSON
values, node classes are looked up among the known node classes only.

Argument encoding: a parent node becomes ``{"__node__": name}``; a tuple
``{"__tuple__": [...]}``; a numpy array or tensor argument (e.g. an initial weight)
``{"__array__": {"shape", "dtype"}}`` whose value is restored from the parameters.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch

from ..errors import ModelFileError

FORMAT_NAME = 'elektronn2-model'
FORMAT_VERSION = 1
GRAPH_FILE = 'graph.json'
PARAMS_FILE = 'params.safetensors'
_PICKLE_MAGIC = (b'\x80', b'(dp', b'(lp', b'ccopy_reg')


def encode_value(value, node_name: str, arg: str, is_node):
    """JSON-able form of one constructor argument."""
    if is_node(value):
        return {'__node__': value.name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [encode_value(v, node_name, arg, is_node) for v in value]
        return items if isinstance(value, list) else {'__tuple__': items}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: encode_value(v, node_name, arg, is_node) for k, v in value.items()}
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return {'__array__': {'shape': list(value.shape), 'dtype': str(value.dtype).replace('torch.', '')}}
    raise ModelFileError(f"Node {node_name!r}: argument {arg}={value!r} of type "
                         f"{type(value).__name__} cannot be stored in a model file")


def decode_value(value, nodes: dict):
    """Inverse of :func:`encode_value`; arrays come back as zeros of the recorded shape."""
    if isinstance(value, list):
        return [decode_value(v, nodes) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {'__node__'}:
        name = value['__node__']
        if name not in nodes:
            raise ModelFileError(f"graph refers to node {name!r} before it is defined")
        return nodes[name]
    if set(value) == {'__tuple__'}:
        return tuple(decode_value(v, nodes) for v in value['__tuple__'])
    if set(value) == {'__array__'}:
        spec = value['__array__']
        return np.zeros(spec['shape'], dtype=np.dtype(spec['dtype']))
    return {k: decode_value(v, nodes) for k, v in value.items()}


def write(path: str | os.PathLike, graph: dict, tensors: dict[str, np.ndarray]) -> Path:
    """Write a model atomically: a directory if ``path`` is one (or ends with '/'), else a zip."""
    path = Path(os.path.expanduser(str(path)))
    graph = {'format': FORMAT_NAME, 'version': FORMAT_VERSION, **graph}
    graph_bytes = json.dumps(graph, indent=1).encode()
    params_bytes = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    as_directory = path.is_dir() or str(path).endswith(os.sep)
    path.parent.mkdir(parents=True, exist_ok=True)
    umask = _current_umask()
    if as_directory:
        tmp = Path(tempfile.mkdtemp(prefix='.tmp-', dir=path.parent))
        os.chmod(tmp, 0o777 & ~umask)
        (tmp / GRAPH_FILE).write_bytes(graph_bytes)
        (tmp / PARAMS_FILE).write_bytes(params_bytes)
        if path.exists():
            old = path.with_name(f".old-{path.name}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    else:
        fd, tmp_name = tempfile.mkstemp(prefix='.tmp-', dir=path.parent)
        try:
            with os.fdopen(fd, 'wb') as f, zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as zf:
                zf.writestr(GRAPH_FILE, graph_bytes)
                zf.writestr(PARAMS_FILE, params_bytes)
            os.chmod(tmp_name, 0o666 & ~umask)
            os.replace(tmp_name, path)
        except BaseException:
            os.unlink(tmp_name)
            raise
    return path


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def read(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and validate a model file; returns (graph, parameter arrays)."""
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise ModelFileError(f"Model file {str(path)!r} does not exist")
    try:
        if path.is_dir():
            graph_bytes = _read_member(path / GRAPH_FILE, path)
            params_bytes = _read_member(path / PARAMS_FILE, path)
        else:
            graph_bytes, params_bytes = _read_zip(path)
        graph = json.loads(graph_bytes)
        tensors = safetensors.numpy.load(params_bytes)
    except ModelFileError:
        raise
    except Exception as err:  # zip, JSON and safetensors errors alike mean a broken file
        raise ModelFileError(f"Model file {str(path)!r} is corrupt or truncated: "
                             f"{type(err).__name__}: {err}") from None
    _validate_graph(graph, path)
    return graph, tensors


def _read_member(file: Path, path: Path) -> bytes:
    if not file.is_file():
        raise ModelFileError(f"Model directory {str(path)!r} has no {file.name}; an elektronn2 "
                             f"model holds {GRAPH_FILE} and {PARAMS_FILE}")
    return file.read_bytes()


def _read_zip(path: Path) -> tuple[bytes, bytes]:
    with open(path, 'rb') as f:
        head = f.read(16)
    if not head.startswith(b'PK'):
        kind = ('a Python pickle (refused: loading it could run code)'
                if head.startswith(_PICKLE_MAGIC) else 'not a zip archive')
        raise ModelFileError(f"{str(path)!r} is not an elektronn2 model file: {kind}. "
                             f"Models are saved by Model.save as {GRAPH_FILE} + {PARAMS_FILE}")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if not {GRAPH_FILE, PARAMS_FILE} <= names:
            raise ModelFileError(f"{str(path)!r} is a zip archive but not an elektronn2 model: "
                                 f"it lacks {sorted({GRAPH_FILE, PARAMS_FILE} - names)} "
                                 f"(it holds {sorted(names)[:5]})")
        return zf.read(GRAPH_FILE), zf.read(PARAMS_FILE)


def _validate_graph(graph, path: Path) -> None:
    if not isinstance(graph, dict) or graph.get('format') != FORMAT_NAME:
        raise ModelFileError(f"{str(path)!r}: {GRAPH_FILE} is not an elektronn2 graph "
                             f"(format {graph.get('format') if isinstance(graph, dict) else None!r})")
    version = graph.get('version')
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{str(path)!r} has format version {version!r}; this elektronn2 "
                             f"reads versions up to {FORMAT_VERSION}: upgrade elektronn2")
    nodes = graph.get('nodes')
    if not isinstance(nodes, list) or not all(
            isinstance(n, dict) and isinstance(n.get('class'), str) and isinstance(n.get('args'), dict)
            for n in nodes):
        raise ModelFileError(f"{str(path)!r}: {GRAPH_FILE} has no valid node list")

