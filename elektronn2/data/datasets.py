"""Known real datasets: their files, SHA-256, licences and where to get them.

Files live under ``elektronn2.config.config.data_dir`` (``$ELEKTRONN2_DATA``, else
``../shared/data`` next to the checkout, else ``~/.cache/elektronn2/data``: see
:func:`elektronn2.config.default_data_dir`), in the subfolder ``mnist/`` or ``em/``.
``get_path(name)`` returns that folder after checking every file's SHA-256 (results are
cached per inode, size and mtime), downloading missing files first where a download is
known (MNIST, from public mirrors).

``$ELEKTRONN2_DATA_URL`` replaces the public mirrors by one or more base URLs
(separated by spaces) of a mirror of the whole data directory: file ``F`` of a
dataset in subfolder ``em/`` is fetched from ``BASE/em/F``. Then the EM datasets are
downloaded too.

Downloads go to ``F.<url-hash>.part`` (resumed with HTTP Range requests after an
interruption, also by a later call), are checked against their SHA-256 and only then
renamed to ``F``; a download that does not match is deleted and reported.
"""
from __future__ import annotations

import difflib
import fcntl
import gzip
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Iterator

from tqdm import tqdm

from .. import __version__
from ..config import config
from ..errors import DataError

logger = logging.getLogger('elektronn2')

DATA_URL_VARIABLE = 'ELEKTRONN2_DATA_URL'
_ATTEMPTS_PER_URL = 3           # tries of one URL; each resumes the partial file
_TIMEOUT = 60.0                 # seconds without data before a download attempt fails
_CHUNK = 1 << 16


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset as distributed by elektronn2.

    ``content_sha256`` (gzip files only): SHA-256 of the decompressed bytes; a copy
    compressed differently, such as the original MNIST distribution served by the
    mirrors, is accepted when its content matches.
    """
    name: str
    size: int
    sha256: str
    content_sha256: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A known dataset: its files in ``data_dir/subdir``, terms of use and origin."""
    name: str
    title: str
    subdir: str
    files: tuple[DataFile, ...]
    description: str
    licence: str
    credit: str
    source: str
    mirrors: tuple[str, ...] = ()   # base URLs serving the files; empty: no public download

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


DATASETS: MappingProxyType[str, Dataset] = MappingProxyType({d.name: d for d in (
    Dataset(
        name='mnist', title='MNIST handwritten digits', subdir='mnist',
        files=(
            DataFile('train-images-idx3-ubyte.gz', 9719438,
                     '0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971',
                     'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db'),
            DataFile('train-labels-idx1-ubyte.gz', 28857,
                     '1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203',
                     '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5'),
            DataFile('t10k-images-idx3-ubyte.gz', 1616508,
                     '1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be',
                     '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7'),
            DataFile('t10k-labels-idx1-ubyte.gz', 4517,
                     'b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b',
                     'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2'),
        ),
        description='60000 training and 10000 test images, 28 x 28 uint8, labels 0-9 '
                    '(IDX format, gzip-compressed)',
        licence='Creative Commons Attribution-ShareAlike 3.0, as offered on the MNIST '
                'home page',
        credit='Yann LeCun, Corinna Cortes and Christopher J. C. Burges (made from NIST '
               'data); credit them when publishing results',
        source='http://yann.lecun.com/exdb/mnist/ (original); downloaded automatically '
               'from public mirrors',
        mirrors=('https://ossci-datasets.s3.amazonaws.com/mnist',
                 'https://storage.googleapis.com/cvdf-datasets/mnist'),
    ),
    Dataset(
        name='isbi2012', title='ISBI 2012 EM segmentation challenge', subdir='em',
        files=(DataFile('isbi2012.h5', 14955572,
                        '19aa58bb39512bddf2984c3dd5c12004c6c2b234805b0b0e7a40862cd6e70f21'),),
        description='serial-section TEM of the Drosophila first-instar larva ventral '
                    'nerve cord, about 4 x 4 x 50 nm voxels. HDF5 (z, y, x): train/raw and '
                    'train/labels (30 x 512 x 512 uint8; 0 = membrane, 255 = cell '
                    'interior), test/raw (30 x 512 x 512)',
        licence='the challenge organisers allow use for developing or testing '
                'non-commercial image segmentation software',
        credit='publications must cite TrakEM2 and Cardona et al. 2010, PLoS Biol 8(10): '
               'e1000502',
        source='the ISBI 2012 challenge data; this file packs the 30 + 30 PNG slices of '
               'https://github.com/zhixuhao/unet (data/membrane/train/image, '
               'train/label, test) into HDF5 with gzip',
    ),
    Dataset(
        name='fib25_training_sample2', title='FIB-25 training sample 2', subdir='em',
        files=(DataFile('fib25_training_sample2.h5', 15218958,
                        'bc87f52ebc7f14ca5f475a7f86fe8b4594cc16f5de7b22580c5e320b490e4cc6'),),
        description='FIB-SEM of the fly medulla (FlyEM "FIB-25"), 10 nm isotropic voxels. '
                    'HDF5 (z, y, x): volumes/raw (250^3 uint8) and '
                    'volumes/labels/neuron_ids (250^3 uint32, 526 neuron ids, dense)',
        licence='Creative Commons Attribution 3.0 (CC BY 3.0)',
        credit='HHMI Janelia FlyEM project',
        source='https://github.com/janelia-flyem/neuroproof_examples, folder '
               'training_sample2/ (grayscale_maps/iso.2600.png to iso.2849.png, and '
               'groundtruth.h5.gz with its supervoxels mapped to bodies), packed into HDF5',
    ),
    Dataset(
        name='fib_gala_small', title='small FIB-SEM crops from gala', subdir='em',
        files=(DataFile('fib_gala_small.h5', 2153997,
                        'cb24dc40897683b031c65bf52ea670b0e186903fc3c46df32c0a12b730c15c23'),),
        description='tiny FIB-SEM crops of the fly medulla for unit tests. HDF5 (z, y, x): '
                    'train/raw, test/raw (50 x 100 x 200 uint8); train/labels, test/labels '
                    '(int32; 0 = boundary, > 0 = object id)',
        licence="gala's BSD-style licence, copyright 2012 HHMI (keep the notice)",
        credit='HHMI Janelia FlyEM project (gala)',
        source='https://github.com/janelia-flyem/gala, tests/example-data/ '
               '(train-image.h5, train-gt.lzf.h5, test-image.h5, test-gt.lzf.h5, dataset '
               '"stack"), stored again with gzip instead of lzf',
    ),
)})


# ---------------------------------------------------------------------------------------
# Verification

_verified: dict[tuple[int, int, int, int], bool] = {}    # by device, inode, size, mtime


def _sha256(path: Path, decompress: bool = False) -> str:
    digest = hashlib.sha256()
    with (gzip.open(path, 'rb') if decompress else open(path, 'rb')) as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_intact(path: Path, datafile: DataFile) -> bool:
    """Whether ``path`` holds ``datafile`` (its bytes, or for gzip its content)."""
    stat = path.stat()
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)   # survives renames
    if key not in _verified:
        intact = stat.st_size == datafile.size and _sha256(path) == datafile.sha256
        if not intact and datafile.content_sha256 is not None:
            try:
                intact = _sha256(path, decompress=True) == datafile.content_sha256
            except (OSError, EOFError, zlib.error):     # not gzip, or truncated
                intact = False
        _verified[key] = intact
    return _verified[key]


def _problem(path: Path, datafile: DataFile) -> str | None:
    """'missing', 'corrupt' or None for an intact file."""
    if not path.is_file():
        return 'missing'
    return None if _is_intact(path, datafile) else 'corrupt'


def _lookup(name: str) -> Dataset:
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ''
        raise DataError(f"unknown dataset {name!r}; {hint}known datasets: "
                        f"{', '.join(DATASETS)}")
    return DATASETS[name]


def _directory(dataset: Dataset) -> Path:
    return Path(config.data_dir).expanduser() / dataset.subdir


def _base_urls(dataset: Dataset) -> list[str]:
    """$ELEKTRONN2_DATA_URL (mirrors of the data directory tree), else the public mirrors."""
    override = os.environ.get(DATA_URL_VARIABLE, '').split()
    if override:
        return [f"{base.rstrip('/')}/{dataset.subdir}" for base in override]
    return list(dataset.mirrors)


def _how_to_get(dataset: Dataset, directory: Path) -> str:
    where = (f"Put the files into {directory}, or set ELEKTRONN2_DATA to a directory "
             f"whose {dataset.subdir}/ subfolder holds them")
    urls = _base_urls(dataset)
    if urls:
        return (f"{where}; elektronn2 downloads missing files itself from "
                f"{', '.join(urls)} (${DATA_URL_VARIABLE} replaces these URLs).")
    return (f"elektronn2 knows no public download of this file. Origin: {dataset.source}. "
            f"{where}, or set ${DATA_URL_VARIABLE} to the base URL of a mirror of the "
            f"elektronn2 data directory (with an {dataset.subdir}/ folder).")


def verify(name: str) -> Path:
    """Check that every file of dataset ``name`` is present and intact; return its folder.

    Raises DataError naming each missing or corrupt file and how to get it.
    """
    dataset = _lookup(name)
    directory = _directory(dataset)
    problems = [(datafile, _problem(directory / datafile.name, datafile))
                for datafile in dataset.files]
    problems = [(datafile, problem) for datafile, problem in problems if problem]
    if not problems:
        return directory
    lines = [f"  {directory / datafile.name}: {problem} (expected {datafile.size} bytes, "
             f"SHA-256 {datafile.sha256})" for datafile, problem in problems]
    corrupt = ("Delete or replace the corrupt files (elektronn2 never deletes them "
               "itself). " if any(problem == 'corrupt' for _, problem in problems) else '')
    raise DataError(f"dataset {name!r} ({dataset.title}) is not complete:\n"
                    + '\n'.join(lines) + f"\n{corrupt}{_how_to_get(dataset, directory)}")


def get_path(name: str, download: bool = True) -> Path:
    """The verified folder holding the files of dataset ``name``.

    Missing files are downloaded first when ``download`` and a download URL is known
    (MNIST, or any dataset with ``$ELEKTRONN2_DATA_URL``). Raises DataError when a file
    is missing or corrupt, saying what to get, from where and where to put it.
    """
    dataset = _lookup(name)
    directory = _directory(dataset)
    urls = _base_urls(dataset)
    missing = [f for f in dataset.files if not (directory / f.name).is_file()]
    if missing and download and urls:
        if not _writable(directory):
            raise DataError(f"cannot download {', '.join(f.name for f in missing)}: "
                            f"{directory} is not writable. Set ELEKTRONN2_DATA to a "
                            f"writable directory, or put the files there yourself.")
        with _download_lock(directory / f'.{dataset.name}.lock'):
            for datafile in missing:
                if not (directory / datafile.name).is_file():   # another process's?
                    _download(datafile, directory, urls)
    return verify(name)


def describe(name: str | None = None) -> str:
    """A readable account of dataset ``name`` (files, state, licence, origin), or of all."""
    if name is None:
        return '\n'.join(
            f"{dataset.name:24s} {dataset.size / 2**20:6.1f} MiB  "
            f"{_state(dataset):12s} {dataset.title}"
            for dataset in DATASETS.values())
    dataset = _lookup(name)
    directory = _directory(dataset)
    files = '\n'.join(
        f"    {f.name:28s} {f.size:>10d} bytes  sha256 {f.sha256}  "
        f"{_problem(directory / f.name, f) or 'ok'}" for f in dataset.files)
    download = (', '.join(_base_urls(dataset)) or 'none known; see source')
    return (f"{dataset.name}: {dataset.title}; {dataset.description}\n"
            f"  folder:   {directory}\n  files:\n{files}\n"
            f"  licence:  {dataset.licence}\n  credit:   {dataset.credit}\n"
            f"  source:   {dataset.source}\n  download: {download}")


def _state(dataset: Dataset) -> str:
    directory = _directory(dataset)
    problems = {_problem(directory / f.name, f) for f in dataset.files} - {None}
    return ' and '.join(sorted(problems)) if problems else 'ok'


# ---------------------------------------------------------------------------------------
# Downloading

def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


@contextmanager
def _download_lock(path: Path) -> Iterator[None]:
    """Exclusive lock across processes, so that parallel first uses download once."""
    with open(path, 'a') as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process downloading into %s", path.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _download(datafile: DataFile, directory: Path, base_urls: list[str]) -> None:
    """Fetch one file from the first URL that gives an intact copy; rename it into place."""
    target = directory / datafile.name
    failures = []
    for base in base_urls:
        url = f"{base.rstrip('/')}/{datafile.name}"
        url_hash = hashlib.sha256(url.encode()).hexdigest()[:8]
        part = directory / f"{datafile.name}.{url_hash}.part"
        logger.info("downloading %s from %s", datafile.name, url)
        error = _download_with_retries(url, part)
        if error is not None:
            kept = f" (partial file kept for resuming: {part})" if part.exists() else ''
            failures.append(f"{url}: {error}{kept}")
            continue
        if _is_intact(part, datafile):
            os.replace(part, target)
            for stale in directory.glob(f"{datafile.name}.*.part"):  # from other mirrors
                stale.unlink()
            return
        part.unlink()
        failures.append(f"{url}: SHA-256 does not match {datafile.sha256}; the corrupt "
                        f"download was deleted")
        logger.warning("download of %s from %s is corrupt; deleted it", datafile.name, url)
    raise DataError(f"could not download {datafile.name} into {directory}:\n  "
                    + '\n  '.join(failures)
                    + f"\nCheck the network and call again (partial downloads resume), "
                      f"download it yourself from one of these URLs into {directory}, set "
                      f"ELEKTRONN2_DATA to a directory whose {directory.name}/ subfolder "
                      f"holds the files, or set ${DATA_URL_VARIABLE} to a reachable mirror.")


def _download_with_retries(url: str, part: Path) -> str | None:
    """Download ``url`` into ``part``, resuming after interruptions; None or the error."""
    error = None
    for attempt in range(_ATTEMPTS_PER_URL):
        try:
            _download_once(url, part)
            return None
        except urllib.error.HTTPError as http_error:    # the server answered: no retry
            return f"HTTP {http_error.code} {http_error.reason}"
        except (OSError, http.client.HTTPException) as network_error:
            error = f"{type(network_error).__name__}: {network_error}"
            logger.warning("download of %s interrupted (%s); attempt %d of %d",
                           url, error, attempt + 1, _ATTEMPTS_PER_URL)
    return error


def _download_once(url: str, part: Path) -> None:
    """One HTTP GET, appending to ``part`` from its current size when the server can."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {'User-Agent': f'elektronn2/{__version__}'}
    if offset:
        headers['Range'] = f'bytes={offset}-'
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=_TIMEOUT)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:    # nothing beyond offset: complete already
            return
        raise
    with response:
        content_range = response.headers.get('Content-Range', '')
        if offset and not (response.status == 206
                           and content_range.startswith(f'bytes {offset}-')):
            offset = 0                      # the server sends the whole file again
        length = response.headers.get('Content-Length')
        total = offset + int(length) if length is not None else None
        with open(part, 'ab' if offset else 'wb') as out, \
                tqdm(total=total, initial=offset, unit='B', unit_scale=True,
                     unit_divisor=1024, desc=part.name.split('.')[0], leave=False) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    received = part.stat().st_size
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")
