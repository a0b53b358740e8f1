"""Known datasets: verification against the real files, downloads from a local HTTP server."""
import gzip
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from elektronn2.config import config
from elektronn2.data import datasets
from elektronn2.errors import DataError

MNIST_FILES = [f.name for f in datasets.DATASETS['mnist'].files]


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves files below ``server.root``, honours ``Range: bytes=N-``, records requests
    and cuts a response short after ``server.cuts[path].pop(0)`` bytes when listed."""

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get('Range')))
        path = self.server.root / self.path.lstrip('/')
        if not path.is_file() or self.server.root not in path.resolve().parents:
            self.send_error(404)
            return
        body = path.read_bytes()
        start = 0
        if self.headers.get('Range'):
            start = int(self.headers['Range'].removeprefix('bytes=').split('-')[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
        else:
            self.send_response(200)
        self.send_header('Content-Length', str(len(body) - start))
        self.end_headers()
        cuts = self.server.cuts.get(self.path)
        end = start + cuts.pop(0) if cuts else len(body)
        self.wfile.write(body[start:end])
        self.close_connection = end < len(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server with Range support serving tmp_path/'served'."""
    root = tmp_path / 'served'
    root.mkdir()
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), _RangeHandler)
    httpd.root, httpd.requests, httpd.cuts = root.resolve(), [], {}
    httpd.url = f'http://127.0.0.1:{httpd.server_address[1]}'
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty data directory as config.data_dir ($ELEKTRONN2_DATA), no download URL."""
    directory = tmp_path / 'cache'
    monkeypatch.setenv('ELEKTRONN2_DATA', str(directory))
    monkeypatch.setattr(config, 'data_dir', str(directory))
    monkeypatch.delenv(datasets.DATA_URL_VARIABLE, raising=False)
    return directory


def _serve(server, data_dir, subdir, monkeypatch):
    shutil.copytree(data_dir / subdir, server.root / subdir)
    monkeypatch.setenv(datasets.DATA_URL_VARIABLE, server.url)


def test_registered_hashes_match_the_real_files(data_dir, monkeypatch):
    monkeypatch.setattr(config, 'data_dir', str(data_dir))
    for name in datasets.DATASETS:
        directory = datasets.get_path(name, download=False)
        assert directory == data_dir / datasets.DATASETS[name].subdir
    sums = {}
    for subdir in ('mnist', 'em'):
        for line in (data_dir / subdir / 'SHA256SUMS').read_text().splitlines():
            digest, file_name = line.split()
            sums[file_name] = digest
    registered = {f.name: f.sha256 for d in datasets.DATASETS.values() for f in d.files}
    assert registered == sums


def test_mnist_is_downloaded_and_verified(cache, server, data_dir, monkeypatch):
    _serve(server, data_dir, 'mnist', monkeypatch)
    directory = datasets.get_path('mnist')
    assert directory == cache / 'mnist'
    for name in MNIST_FILES:
        assert (directory / name).read_bytes() == (data_dir / 'mnist' / name).read_bytes()
    assert not list(directory.glob('*.part'))
    assert sorted(path for path, _ in server.requests) == sorted(
        f'/mnist/{name}' for name in MNIST_FILES)
    datasets.get_path('mnist')                      # present: no further request
    assert len(server.requests) == len(MNIST_FILES)


def test_interrupted_download_resumes_from_the_partial_file(cache, server, data_dir,
                                                            monkeypatch):
    _serve(server, data_dir, 'mnist', monkeypatch)
    path = '/mnist/train-images-idx3-ubyte.gz'
    server.cuts[path] = [1_000_000] * 3         # every attempt of the first call breaks
    with pytest.raises(DataError, match='train-images-idx3-ubyte.gz') as caught:
        datasets.get_path('mnist')
    assert 'resum' in str(caught.value) and server.url in str(caught.value)
    assert [r for p, r in server.requests if p == path] == [
        None, 'bytes=1000000-', 'bytes=2000000-']
    (part,) = (cache / 'mnist').glob('train-images-idx3-ubyte.gz.*.part')
    assert part.stat().st_size == 3_000_000
    datasets.get_path('mnist')                  # a later call goes on where it stopped
    assert [r for p, r in server.requests if p == path][-1] == 'bytes=3000000-'
    assert (cache / 'mnist' / 'train-images-idx3-ubyte.gz').read_bytes() == (
        data_dir / 'mnist' / 'train-images-idx3-ubyte.gz').read_bytes()
    assert not part.exists()


def test_corrupt_download_is_deleted_and_reported(cache, server, data_dir, monkeypatch):
    _serve(server, data_dir, 'mnist', monkeypatch)
    served = server.root / 'mnist' / 't10k-labels-idx1-ubyte.gz'
    damaged = bytearray(served.read_bytes())
    damaged[100] ^= 0xFF
    served.write_bytes(damaged)
    with pytest.raises(DataError, match='SHA-256 does not match') as caught:
        datasets.get_path('mnist')
    assert 't10k-labels-idx1-ubyte.gz' in str(caught.value)
    assert 'deleted' in str(caught.value)
    left = sorted(path.name for path in (cache / 'mnist').iterdir()
                  if not path.name.startswith('.'))
    assert left == sorted(set(MNIST_FILES) - {'t10k-labels-idx1-ubyte.gz'})


def test_differently_compressed_copy_is_accepted_by_its_content(cache, server, data_dir,
                                                                monkeypatch):
    _serve(server, data_dir, 'mnist', monkeypatch)
    served = server.root / 'mnist' / 'train-labels-idx1-ubyte.gz'
    original = served.read_bytes()
    served.write_bytes(gzip.compress(gzip.decompress(original), compresslevel=1, mtime=0))
    assert served.read_bytes() != original
    assert datasets.get_path('mnist') == cache / 'mnist'   # as from the original mirrors


def test_next_mirror_is_tried_when_one_fails(cache, server, data_dir, monkeypatch):
    _serve(server, data_dir, 'mnist', monkeypatch)
    monkeypatch.setenv(datasets.DATA_URL_VARIABLE, f'{server.url}/nowhere {server.url}')
    assert datasets.get_path('mnist') == cache / 'mnist'
    assert ('/nowhere/mnist/t10k-labels-idx1-ubyte.gz', None) in server.requests


def test_missing_em_file_says_what_to_get_and_where_to_put_it(cache):
    with pytest.raises(DataError) as caught:
        datasets.get_path('isbi2012')
    message = str(caught.value)
    assert 'isbi2012.h5: missing' in message
    assert str(cache / 'em') in message and 'ELEKTRONN2_DATA' in message
    assert 'github.com/zhixuhao/unet' in message
    assert '19aa58bb39512bddf2984c3dd5c12004c6c2b234805b0b0e7a40862cd6e70f21' in message


def test_em_dataset_comes_from_a_mirror_of_the_data_directory(cache, server, data_dir,
                                                              monkeypatch):
    _serve(server, data_dir, 'em', monkeypatch)
    assert datasets.get_path('fib_gala_small') == cache / 'em'
    assert server.requests == [('/em/fib_gala_small.h5', None)]


def test_corrupt_file_on_disk_is_reported_not_deleted(cache, data_dir):
    (cache / 'em').mkdir(parents=True)
    copy = cache / 'em' / 'fib_gala_small.h5'
    shutil.copyfile(data_dir / 'em' / 'fib_gala_small.h5', copy)
    assert datasets.verify('fib_gala_small') == cache / 'em'
    content = bytearray(copy.read_bytes())
    content[-1] ^= 0xFF                         # same size: the cached result must not hold
    copy.write_bytes(content)
    with pytest.raises(DataError, match='fib_gala_small.h5: corrupt'):
        datasets.verify('fib_gala_small')
    assert copy.exists()
    assert 'corrupt' in datasets.describe('fib_gala_small')


def test_describe_and_unknown_names(cache, data_dir, monkeypatch):
    monkeypatch.setattr(config, 'data_dir', str(data_dir))
    listing = datasets.describe()
    assert all(name in listing for name in datasets.DATASETS)
    text = datasets.describe('fib25_training_sample2')
    assert 'CC BY 3.0' in text and 'Janelia' in text and 'neuroproof_examples' in text
    assert 'fib25_training_sample2.h5' in text and ' ok' in text
    with pytest.raises(DataError, match="did you mean 'mnist'"):
        datasets.get_path('mnsit')
