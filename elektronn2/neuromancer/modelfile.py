"""The model file format: ``graph.json`` plus ``params.safetensors``.

A model is saved either as a directory holding the two files or as a zip archive
of them (any path that is not a directory and does not end with a separator).
``graph.json`` holds the format name and version, the node descriptors in
construction order (class name and constructor arguments, parents by name) and the
designations. Reading never unpickles and never executes anything from the file:
arguments are plain JSON values, node classes are looked up among the known node
classes only, and every other name in the file (ApplyFunc's function, activations,
initialisations, dtypes) is looked up in an allow-list.

A file can make the reader allocate no more than it holds: zip members may declare
at most :data:`MAX_GRAPH_BYTES` of graph and a compression ratio of
:data:`MAX_COMPRESSION_RATIO`; stored arrays are at most as large as the tensor that
holds their value; the model is built on the meta device and each parameter is checked
against the stored tensors before memory is allocated for it (see
:func:`elektronn2.neuromancer.loading.modelload`). Non-finite parameters are refused on
reading and on writing.

Argument encoding: a parent node becomes ``{"__node__": name}``; a tuple
``{"__tuple__": [...]}``; a numpy array or tensor argument (e.g. an initial weight)
``{"__array__": {"shape", "dtype"}}`` whose value is restored from the parameter of
the same name (argument ``w`` of node ``conv``: tensor ``conv.w``).

Writing is atomic: a temporary ``.tmp-NAME~HOST~PID~*`` next to the target is renamed
over it. Leftovers of interrupted writes of the same target are removed by the next
write once stale (their writer's process is gone, or older than :data:`STALE_SECONDS`).
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch

from ..errors import ModelFileError

logger = logging.getLogger('elektronn2')

FORMAT_NAME = 'elektronn2-model'
FORMAT_VERSION = 1
GRAPH_FILE = 'graph.json'
PARAMS_FILE = 'params.safetensors'
_PICKLE_MAGIC = (b'\x80', b'(dp', b'(lp', b'ccopy_reg')
#: Largest graph.json read (bytes; a graph of 10 000 nodes takes about 4 MB).
MAX_GRAPH_BYTES = 16 * 2 ** 20
#: Deepest nesting of lists and objects in graph.json (a saved graph has about 6).
MAX_NESTING = 32
#: Largest ratio of uncompressed to compressed size of a zip member.
MAX_COMPRESSION_RATIO = 100
#: dtypes of stored arrays (``__array__`` arguments).
ARRAY_DTYPES = frozenset({'float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64',
                          'uint8', 'bool'})
#: Age (seconds) after which a leftover of an interrupted write counts as stale even if
#: its writer's process id is in use (or it was written on another host).
STALE_SECONDS = 3600
_SWAP_TRIES = 5


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


def decode_value(value, nodes: dict, stored_shape: tuple | None = None, where: str = 'argument'):
    """Inverse of :func:`encode_value`; arrays come back as zeros of the recorded shape.

    ``stored_shape`` is the shape of the stored tensor that holds the value of this
    argument (None if there is none): an array must broadcast to it and hold at most as
    many values, else it is refused. ``where`` names the argument in errors.
    """
    if isinstance(value, list):
        return [decode_value(v, nodes, stored_shape, where) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {'__node__'}:
        name = value['__node__']
        if not isinstance(name, str) or name not in nodes:
            raise ModelFileError(f"{where}: refers to node {name!r} before it is defined")
        return nodes[name]
    if set(value) == {'__tuple__'} and isinstance(value['__tuple__'], list):
        return tuple(decode_value(v, nodes, stored_shape, where) for v in value['__tuple__'])
    if set(value) == {'__array__'}:
        return _decode_array(value['__array__'], stored_shape, where)
    return {k: decode_value(v, nodes, stored_shape, where) for k, v in value.items()}


def _decode_array(spec, stored_shape: tuple | None, where: str) -> np.ndarray:
    """Zeros of an array spec that fits the stored tensor ``stored_shape``."""
    shape = spec.get('shape') if isinstance(spec, dict) else None
    dtype = spec.get('dtype') if isinstance(spec, dict) else None
    if (not isinstance(shape, list) or dtype not in ARRAY_DTYPES
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise ModelFileError(f"{where}: invalid array {spec!r:.200}; an array is "
                             f"{{'shape': [sizes >= 0], 'dtype': one of {sorted(ARRAY_DTYPES)}}}")
    if stored_shape is None:
        raise ModelFileError(f"{where}: an array of shape {tuple(shape)} whose value no "
                             f"stored tensor holds (a tensor named after node and argument)")
    if not _fits(tuple(shape), tuple(stored_shape)):
        raise ModelFileError(f"{where}: an array of shape {tuple(shape)} does not fit the "
                             f"stored tensor of shape {tuple(stored_shape)} that holds its value")
    return np.zeros(shape, dtype=np.dtype(dtype))


def _fits(shape: tuple, stored: tuple) -> bool:
    """``shape`` broadcasts to ``stored`` and has no more values."""
    if len(shape) > len(stored) or math.prod(shape) > math.prod(stored):
        return False
    return all(a in (1, b) for a, b in zip(shape[::-1], stored[::-1]))


# --- writing ----------------------------------------------------------------------------------
def write(path: str | os.PathLike, graph: dict, tensors: dict[str, np.ndarray]) -> Path:
    """Write a model atomically: a directory if ``path`` is one or ends with a separator,
    else a zip file. Refuses (ModelFileError) non-finite parameters."""
    as_directory = str(os.fspath(path)).endswith(('/', os.sep))
    path = Path(os.path.expanduser(str(path)))
    as_directory = as_directory or path.is_dir()
    bad = non_finite(tensors)
    if bad:
        raise ModelFileError(f"not saving a model to {str(path)!r}: parameters {bad} are not "
                             f"finite (NaN or Inf)")
    graph = {'format': FORMAT_NAME, 'version': FORMAT_VERSION, **graph}
    graph_bytes = json.dumps(graph, indent=1).encode()
    params_bytes = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_leftovers(path)
    if as_directory:
        _write_directory(path, graph_bytes, params_bytes)
    else:
        _write_zip(path, graph_bytes, params_bytes)
    return path


def non_finite(tensors: dict[str, np.ndarray], limit: int = 10) -> list[str]:
    """Names of (up to ``limit``) tensors holding NaN or Inf."""
    bad = [k for k, v in tensors.items()
           if np.asarray(v).dtype.kind in 'fc' and not np.isfinite(v).all()]
    return sorted(bad)[:limit]


def _temporary_prefix(path: Path) -> str:
    """``.tmp-NAME~HOST~PID~``: whose leftover it is (see :func:`_is_stale_leftover`)."""
    return f".tmp-{path.name}~{_host()}~{os.getpid()}~"


def _host() -> str:
    return socket.gethostname().replace('~', '-')


def _write_directory(path: Path, graph_bytes: bytes, params_bytes: bytes) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_current_umask())
        (tmp / GRAPH_FILE).write_bytes(graph_bytes)
        (tmp / PARAMS_FILE).write_bytes(params_bytes)
        _swap_in(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename the finished directory ``tmp`` to ``path``, replacing what is there (also
    when concurrent writers replace it meanwhile: the last rename wins)."""
    old = tmp.with_name('.old-' + tmp.name[len('.tmp-'):])
    for _ in range(_SWAP_TRIES):
        try:
            if os.path.lexists(path):
                os.replace(path, old)
        except FileNotFoundError:  # another writer moved it away first
            pass
        try:
            os.replace(tmp, path)
            return
        except OSError as err:  # another writer put its version there first: again
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
        finally:
            _remove(old)
    raise ModelFileError(f"could not replace {str(path)!r}: other writers kept replacing it")


def _write_zip(path: Path, graph_bytes: bytes, params_bytes: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f, zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as zf:
            zf.writestr(GRAPH_FILE, graph_bytes)
            zf.writestr(PARAMS_FILE, params_bytes)
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        os.replace(tmp_name, path)
    except BaseException:
        _remove(Path(tmp_name))
        raise


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _remove(path: Path) -> None:
    """Delete a file, link or directory tree if it exists."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _remove_stale_leftovers(path: Path) -> list[Path]:
    """Delete the stale ``.tmp-NAME~*`` and ``.old-NAME~*`` (and ``.old-NAME`` of
    earlier versions) that interrupted writes of ``path`` left; returns them."""
    removed = []
    for entry in path.parent.iterdir():
        if _is_stale_leftover(entry, path.name):
            _remove(entry)
            removed.append(entry)
    if removed:
        logger.info("Removed leftovers of interrupted saves of %s: %s", path,
                    [p.name for p in removed])
    return removed


def _is_stale_leftover(entry: Path, name: str) -> bool:
    if entry.name == f".old-{name}":
        return True
    parts = entry.name.rsplit('~', 3)
    if len(parts) != 4 or parts[0] not in (f".tmp-{name}", f".old-{name}"):
        return False
    _, host, pid, _ = parts
    try:
        age = time.time() - entry.lstat().st_mtime
    except FileNotFoundError:
        return False
    if age > STALE_SECONDS:
        return True
    return host == _host() and pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


# --- reading ----------------------------------------------------------------------------------
def read(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and validate a model file; returns (graph, parameter arrays)."""
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise ModelFileError(f"Model file {str(path)!r} does not exist")
    try:
        graph_bytes, params_bytes = _read_directory(path) if path.is_dir() else _read_zip(path)
        graph = json.loads(graph_bytes)
        tensors = safetensors.numpy.load(params_bytes)
    except ModelFileError:
        raise
    except Exception as err:  # zip, JSON and safetensors errors alike mean a broken file
        raise ModelFileError(f"Model file {str(path)!r} is corrupt or truncated: "
                             f"{type(err).__name__}: {err}") from None
    _validate_graph(graph, path)
    bad = non_finite(tensors)
    if bad:
        raise ModelFileError(f"Model file {str(path)!r}: parameters {bad} are not finite "
                             f"(NaN or Inf); a model that diverged cannot be loaded")
    return graph, tensors


def _read_directory(path: Path) -> tuple[bytes, bytes]:
    for file in (path / GRAPH_FILE, path / PARAMS_FILE):
        if not file.is_file():
            raise ModelFileError(f"Model directory {str(path)!r} has no {file.name}; an "
                                 f"elektronn2 model holds {GRAPH_FILE} and {PARAMS_FILE}")
    with open(path / GRAPH_FILE, 'rb') as f:
        graph_bytes = f.read(MAX_GRAPH_BYTES + 1)
    if len(graph_bytes) > MAX_GRAPH_BYTES:
        raise ModelFileError(f"{str(path / GRAPH_FILE)!r} is larger than {MAX_GRAPH_BYTES:,} "
                             f"bytes, the most a model graph may take")
    return graph_bytes, (path / PARAMS_FILE).read_bytes()


def _read_zip(path: Path) -> tuple[bytes, bytes]:
    with open(path, 'rb') as f:
        head = f.read(16)
    if not head.startswith(b'PK'):
        kind = ('a Python pickle (refused: loading it could run code)'
                if head.startswith(_PICKLE_MAGIC) else 'not a zip archive')
        raise ModelFileError(f"{str(path)!r} is not an elektronn2 model file: {kind}. "
                             f"Models are saved by Model.save as {GRAPH_FILE} + {PARAMS_FILE}")
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: info for info in zf.infolist()}
        if not {GRAPH_FILE, PARAMS_FILE} <= set(members):
            raise ModelFileError(f"{str(path)!r} is a zip archive but not an elektronn2 model: "
                                 f"it lacks {sorted({GRAPH_FILE, PARAMS_FILE} - set(members))} "
                                 f"(it holds {sorted(members)[:5]})")
        for info in (members[GRAPH_FILE], members[PARAMS_FILE]):
            _check_member_size(info, path)
        return zf.read(GRAPH_FILE), zf.read(PARAMS_FILE)


def _check_member_size(info: zipfile.ZipInfo, path: Path) -> None:
    """Refuse a member whose declared size the archive cannot hold (a zip bomb)."""
    archive_size = path.stat().st_size
    limit = min(MAX_COMPRESSION_RATIO * info.compress_size,
                MAX_GRAPH_BYTES if info.filename == GRAPH_FILE else math.inf)
    if info.compress_size > archive_size or info.file_size > limit:
        raise ModelFileError(
            f"{str(path)!r}: member {info.filename} declares {info.file_size:,} bytes from "
            f"{info.compress_size:,} compressed (the archive has {archive_size:,}); at most "
            f"{MAX_COMPRESSION_RATIO}x compression"
            + (f" and {MAX_GRAPH_BYTES:,} bytes" if info.filename == GRAPH_FILE else '')
            + " are read")


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
    if _nesting(graph) > MAX_NESTING:
        raise ModelFileError(f"{str(path)!r}: {GRAPH_FILE} nests lists and objects deeper "
                             f"than {MAX_NESTING} levels")
    _validate_names(nodes, path)
    _validate_state(graph, path)


def _nesting(value) -> int:
    """Depth of nested lists and dicts, found without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((v, depth + 1) for v in children)
    return deepest


def _validate_names(nodes: list, path: Path) -> None:
    """Every node has a unique, non-empty string name."""
    seen = set()
    for i, descr in enumerate(nodes):
        name = descr['args'].get('name')
        if not isinstance(name, str) or not name or name in seen:
            problem = 'a duplicate' if name in seen else 'an invalid'
            raise ModelFileError(f"{str(path)!r}: node #{i} ({descr['class']}) has {problem} "
                                 f"name {name!r:.80}; names are unique non-empty strings")
        seen.add(name)


def _validate_state(graph: dict, path: Path) -> None:
    """Model name, designations, hyper-parameters and iterations are plain values."""
    designations = graph.get('designations', {})
    named = all(isinstance(v, str) or (isinstance(v, list) and all(isinstance(n, str) for n in v))
                for v in designations.values()) if isinstance(designations, dict) else False
    hyper = graph.get('hyper_params', {})
    numbers = isinstance(hyper, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in hyper.values())
    iterations = graph.get('iterations', 0)
    problems = {'name': isinstance(graph.get('name', ''), str),
                'designations': named, 'hyper_params': numbers,
                'iterations': isinstance(iterations, int) and iterations >= 0}
    bad = [key for key, ok in problems.items() if not ok]
    if bad:
        raise ModelFileError(f"{str(path)!r}: {GRAPH_FILE} has invalid {bad} (model name: a "
                             f"string; designations: node names; hyper_params: finite numbers; "
                             f"iterations: an int >= 0)")
