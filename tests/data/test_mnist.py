"""MNISTData on the real IDX files: the full set, crops, shifts, warps, flat vectors."""
import gzip
import pickle

import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.config import config
from elektronn2.data import MNISTData, read_idx, save_batch_picture
from elektronn2.errors import ConfigError, DataError, ShapeError

TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture
def mnist_dir(data_dir):
    return data_dir / 'mnist'


def mnist_net(shape=(None, 1, 26, 26), tags='b,f,y,x', n_class=10):
    inp = nm.Input(shape, tags, name='raw')
    probs = nm.Softmax(nm.Perceptron(inp, n_class, flatten=True, activation_func='lin'))
    return inp, nm.Input_like(probs, override_f=1, name='target', dtype='int16')


def crops_of(digit: np.ndarray, size: int = 26) -> np.ndarray:
    """All shifted crops (9, size, size) of a 28x28 uint8 digit, scaled to [0, 1]."""
    return np.stack([digit[i:i + size, j:j + size] for i in range(29 - size)
                     for j in range(29 - size)]).astype(np.float32) / 255


def test_full_set_is_loaded(mnist_dir):
    data = MNISTData(*mnist_net(), path=mnist_dir)
    sizes = {split: len(labels) for split, (_, labels) in data.arrays.items()}
    assert sizes == {'train': 50_000, 'valid': 10_000, 'test': 10_000}
    all_train = np.concatenate([data.arrays['train'][1], data.arrays['valid'][1]])
    np.testing.assert_array_equal(np.bincount(all_train), TRAIN_CLASS_COUNTS)
    images, labels = data.getbatch(10_000, 'test')
    assert images.shape == (10_000, 1, 26, 26) and images.dtype == np.float32
    assert labels.shape == (10_000, 1) and labels.dtype == np.int16
    np.testing.assert_array_equal(np.bincount(labels[:, 0]), np.bincount(data.arrays['test'][1]))
    assert images.min() == 0 and images.max() == 1


def test_shift_augment_and_centred_crops(mnist_dir):
    data = MNISTData(*mnist_net(), path=mnist_dir, seed=0)
    images, labels = data.getbatch(64)
    train_images, train_labels = data.arrays['train']
    index = data._order[:64]  # the examples of the first batch, in order
    np.testing.assert_array_equal(labels[:, 0], train_labels[index])
    shifts = [int(np.argmax([np.array_equal(img[0], c) for c in crops_of(train_images[i])]))
              for img, i in zip(images, index)]
    assert all(np.array_equal(img[0], crops_of(train_images[i])[s])
               for img, i, s in zip(images, index, shifts))
    assert len(set(shifts)) > 3  # random shifts
    centred = MNISTData(*mnist_net(), path=mnist_dir, shift_augment=False, seed=0)
    images, _ = centred.getbatch(8)
    for img, i in zip(images, centred._order[:8]):
        np.testing.assert_array_equal(img[0], crops_of(train_images[i])[4])


def test_warp_and_shift_picture(mnist_dir, tmp_path):
    plain = MNISTData(*mnist_net(), path=mnist_dir, seed=3)
    warped = MNISTData(*mnist_net(), path=mnist_dir, seed=3, warp_on=True)
    plain_images, plain_labels = plain.getbatch(16)
    warped_images, warped_labels = warped.getbatch(16)
    np.testing.assert_array_equal(plain_labels, warped_labels)  # same examples, other crops
    assert warped_images.min() >= 0 and warped_images.max() <= 1
    assert not np.array_equal(plain_images, warped_images)
    for a, b in zip(plain_images, warped_images):  # still the same digit
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.3
    save_batch_picture(warped_images, warped_labels, tmp_path / 'mnist.png', max_examples=8,
                       title='MNIST, shifted and warped')
    assert (tmp_path / 'mnist.png').read_bytes()[:4] == b'\x89PNG'


def test_flat_vectors_and_axis_order(mnist_dir):
    flat, labels = MNISTData(*mnist_net((None, 784), 'b,f'), path=mnist_dir).getbatch(5, 'valid')
    assert flat.shape == (5, 784) and labels.shape == (5, 1)
    vectors, _ = MNISTData(*mnist_net(), path=mnist_dir, convert2image=False).getbatch(3)
    assert vectors.shape == (3, 676)
    options = dict(path=mnist_dir, shift_augment=False, seed=1)
    yx = MNISTData(*mnist_net((None, 1, 20, 24), 'b,f,y,x'), **options)
    xy = MNISTData(*mnist_net((None, 1, 24, 20), 'b,f,x,y'), **options)
    np.testing.assert_array_equal(yx.getbatch(4)[0], xy.getbatch(4)[0].transpose(0, 1, 3, 2))


def test_pickle_drops_and_reloads_the_images(mnist_dir):
    data = MNISTData(*mnist_net(), path=mnist_dir)
    payload = pickle.dumps(data)
    assert len(payload) < 100_000
    images, labels = pickle.loads(payload).getbatch(2, 'test')
    assert images.shape == (2, 1, 26, 26)


def test_default_path_comes_from_datasets(mnist_dir, monkeypatch):
    monkeypatch.setattr(config, 'data_dir', str(mnist_dir.parent))
    assert MNISTData(*mnist_net()).path == mnist_dir


def test_errors(mnist_dir, tmp_path):
    with pytest.raises(DataError, match=r'train-images-idx3-ubyte\.gz is missing'):
        MNISTData(*mnist_net(), path=tmp_path)
    with gzip.open(tmp_path / 'bad.gz', 'wb') as f:
        f.write(b'\x00\x00\x08\x01' + (5).to_bytes(4, 'big') + b'\x01\x02')  # 2 of 5 bytes
    with pytest.raises(DataError, match=r'declares shape \(5,\) but holds 2 values'):
        read_idx(tmp_path / 'bad.gz')
    (tmp_path / 'short.idx').write_bytes(b'\x00\x00\x08\x03\x00\x00')
    with pytest.raises(DataError, match='truncated inside its header'):
        read_idx(tmp_path / 'short.idx')
    with pytest.raises(ShapeError, match='largest input is 28 x 28'):
        MNISTData(*mnist_net((None, 1, 30, 30)), path=mnist_dir)
    with pytest.raises(ConfigError, match='MNIST has 10 classes'):
        MNISTData(*mnist_net(n_class=5), path=mnist_dir)
    data = MNISTData(*mnist_net(), path=mnist_dir)
    with pytest.raises(ConfigError, match="source='validation' is invalid"):
        data.getbatch(1, 'validation')


def test_background_batches_are_reproducible(mnist_dir):
    """MNISTData.reseed lets BackgroundBatches give the same batches for the same seed."""
    from elektronn2.data import BackgroundBatches
    inp = nm.Input((None, 1, 26, 26), 'b,f,y,x', name='raw')
    data = MNISTData(inp, None, path=mnist_dir)
    runs = []
    for _ in range(2):
        with BackgroundBatches(data, 8, n_workers=2, seed=3) as batches:
            runs.append([batches.next()[1][:, 0].tolist() for _ in range(4)])
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]
