"""Blockwise segmentation: the same array for every block shape, on FIB-25 crops; the graph
steps by hand; OME-Zarr output and pyramids; blockwise evaluation."""
import h5py
import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

from elektronn2.data.labels import ids2affinities
from elektronn2.data.sources import ArraySource
from elektronn2.errors import ConfigError, DataError
from elektronn2.inference import blockwise_segmentation
from elektronn2.inference.blockwise_segmentation import (
    BlockStepError,
    run_segmentation,
    segment_to_file,
    segment_volume,
)
from elektronn2.inference.landscape import Landscape
from elektronn2.inference.metrics import Contingency, evaluate_sources, scores
from elektronn2.inference.metrics import variation_of_information as voi
from elektronn2.inference.ome_zarr import describe_prediction, downsample_mode, level_key
from elektronn2.inference.region_graph import (
    QUANTUM,
    RegionGraph,
    absorb_small,
    first_member_numbering,
    mean_linkage,
    seeded_cut,
)
from elektronn2.inference.segmentation import segment_boundaries

BLOCK_SHAPES = [(16, 16, 16), (7, 23, 31), (40, 9, 64), (13, 64, 17)]


@pytest.fixture(scope='module')
def fib25_crop(fib25):
    """(raw-derived boundary map, neuron ids) of FIB-25 z 0-40, y 0-64, x 20-84: one minus
    smoothed raw scaled by percentiles (the thresholded-raw baseline's map)."""
    with h5py.File(fib25) as f:
        raw = f['volumes/raw'][:40, :64, 20:84].astype(np.float32)
        ids = f['volumes/labels/neuron_ids'][:40, :64, 20:84]
    smooth = ndi.gaussian_filter(raw, 1.0)
    low, high = np.percentile(smooth, (1, 99))
    return (1 - np.clip((smooth - low) / (high - low), 0, 1)).astype(np.float32), ids


@pytest.mark.parametrize('settings', [
    {'seed_threshold': 0.5},
    {'seed_threshold': 0.6, 'min_seed_size': 30, 'merge_threshold': 0.35, 'min_size': 80},
    {'seed_threshold': 0.5, 'seed_erosion': 2.0, 'merge_threshold': 0.35},
])
def test_every_block_shape_gives_the_whole_volume_segmentation(fib25_crop, settings):
    boundary, ids = fib25_crop
    whole = segment_volume(boundary, **settings)
    assert whole.dtype == np.uint32 and whole.min() >= 1 and whole.max() > 5
    for block_shape in BLOCK_SHAPES:
        np.testing.assert_array_equal(segment_volume(boundary, block_shape, **settings), whole,
                                      err_msg=str(block_shape))
    # ids 1..n in the raster order of each segment's first voxel
    _, first = np.unique(whole.ravel(), return_index=True)
    assert np.all(np.diff(first) > 0) and whole.max() == len(first)
    # the steepest-descent watershed is close to segment_boundaries' flooding
    split, merge = voi(whole, segment_boundaries(boundary, **settings).astype(np.int64), ())
    assert split + merge < 0.1


def test_affinities_blockwise_equal_whole_volume(fib25_crop):
    _, ids = fib25_crop
    rng = np.random.default_rng(0)
    affinities = ids2affinities(ids).astype(np.float32)
    affinities = np.clip(affinities * 0.8 + rng.uniform(0, 0.2, affinities.shape), 0, 1)
    # a voxel next to one cut edge has boundary 1 - (5 * 0.9 + 0.1) / 6 = 0.23: the seeds
    # must exclude it, the voxel-mean merging must stay below it; 1 - affinity of a cut
    # edge is about 0.9
    for edges, merge in (('boundary', 0.15), ('affinities', 0.5)):
        options = dict(affinities=True, seed_threshold=0.85, merge_threshold=merge,
                       edge_values=edges, min_size=20)
        whole = segment_volume(affinities.astype(np.float32), **options)
        blocks = segment_volume(affinities.astype(np.float32), (16, 20, 24), **options)
        np.testing.assert_array_equal(blocks, whole)
        split, merge = voi(whole, ids)
        assert split < 0.05 and merge < 0.05, (edges, split, merge)
    with pytest.raises(ConfigError, match='needs affinities'):
        segment_volume(fib25_crop[0], edge_values='affinities')


def test_affinity_channels_select_the_connected_class_of_a_softmax_per_edge(fib25_crop):
    """A two-class softmax per edge (channels 2k: cut, 2k + 1: connected) segments like its
    affinities alone when those channels are selected; wrong selections are refused."""
    _, ids = fib25_crop
    rng = np.random.default_rng(1)
    affinities = np.clip(ids2affinities(ids) * 0.8 + rng.uniform(0, 0.2, (3,) + ids.shape), 0, 1)
    affinities = affinities.astype(np.float32)
    softmax = np.stack([1 - affinities, affinities], 1).reshape((6,) + ids.shape)
    options = dict(affinities=True, seed_threshold=0.85, merge_threshold=0.5,
                   edge_values='affinities', min_size=20)
    expected = segment_volume(affinities, (16, 20, 24), **options)
    selected = segment_volume(softmax, (16, 20, 24), affinity_channels=[1, 3, -1], **options)
    np.testing.assert_array_equal(selected, expected)
    with pytest.raises(ConfigError, match='--affinity-channels 1 3 5'):
        segment_volume(softmax, **options)          # 6 channels, 3 offsets: the hint
    with pytest.raises(ConfigError, match=r'6 channel\(s\).*0\.\.5'):
        segment_volume(softmax, affinity_channels=[1, 3, 6], **options)
    with pytest.raises(ConfigError, match='2 of them affinities'):
        segment_volume(softmax, affinity_channels=[1, 3], **options)
    with pytest.raises(ConfigError, match='not read as affinities'):
        segment_volume(softmax[:2], affinity_channels=[1])


def test_an_unexpected_failure_names_its_step_and_block(tmp_path, monkeypatch):
    def broken(*args):
        raise OSError('disk full')
    monkeypatch.setattr(blockwise_segmentation, 'contacts_step', broken)
    with pytest.raises(BlockStepError, match=r"step 'contacts', block 0_0_0 \[0:4, 0:5, 0:6\)"
                                             r" \(z, y, x\): OSError: disk full"):
        run_segmentation(Landscape.of(ArraySource(np.zeros((4, 5, 6), np.float32))),
                         tmp_path / 'seg.zarr', retries=0, progress=False)


def test_no_seeds_and_bad_settings_are_refused():
    with pytest.raises(ConfigError, match='No seeds'):
        segment_volume(np.ones((4, 5, 6), np.float32))
    with pytest.raises(ConfigError, match='seed_threshold'):
        segment_volume(np.zeros((4, 5, 6), np.float32), seed_threshold=1.0)
    with pytest.raises(ConfigError, match=r'seed_erosion=17.0 \(--seed-erosion\).*\[0, 16\]'):
        segment_volume(np.zeros((4, 5, 6), np.float32), seed_erosion=17.0)
    with pytest.raises(ConfigError, match=r"unknown segmentation setting\(s\) \['seeds'\]"):
        segment_volume(np.zeros((4, 5, 6), np.float32), seeds='distance')
    with pytest.raises(ConfigError, match='--channel 2'):
        segment_volume(np.zeros((2, 4, 5, 6), np.float32), channel=2)
    with pytest.raises(DataError, match=r'outside \[0, 1\].*max 3 in the box \[0:4, 0:5, 0:6\)'):
        segment_volume(np.full((4, 5, 6), 3, np.float32))
    with pytest.raises(ConfigError, match=r'\*\.zarr'):
        run_segmentation(Landscape.of(ArraySource(np.zeros((4, 5, 6), np.float32))), 'seg.h5')


def graph(edges):
    """A RegionGraph of (a, b, mean, saddle) rows, each edge one voxel pair."""
    a, b, mean, saddle = (np.array(c) for c in zip(*edges))
    return RegionGraph.of_pairs(a, b, np.rint(np.array(mean) * 2 * QUANTUM).astype(np.int64),
                                np.rint(saddle * QUANTUM).astype(np.int64))


def test_graph_steps_by_hand():
    # basins 1 and 4 are seeded; 2 and 3 join the seed behind their lowest pass
    g = graph([(1, 2, 0.5, 0.5), (2, 3, 0.2, 0.2), (3, 4, 0.3, 0.3), (1, 4, 0.1, 0.1)])
    cut = seeded_cut(4, g, np.array([False, True, False, False, True]))
    assert cut[2] == cut[3] == cut[4] != cut[1]
    # mean linkage joins the weakest contact first, then looks again at the union:
    # {1, 4} touches 2 at 0.5 and 3 at 0.3, {2, 3} then joins it at (0.5 + 0.3) / 2
    assert mean_linkage(4, g, 0.15).tolist() == [0, 1, 2, 3, 1]
    assert len(set(mean_linkage(4, g, 0.45)[1:].tolist())) == 1
    assert len(set(mean_linkage(4, g, 0.35)[1:].tolist())) == 2
    # the smallest region goes first, to its lowest pass
    sizes = np.array([0, 100, 5, 50, 100])
    assert absorb_small(4, g, sizes, 10).tolist() == [0, 1, 3, 3, 4]
    assert first_member_numbering(np.array([0, 3, 3, 1, 3])).tolist() == [0, 1, 1, 2, 1]
    doubled = RegionGraph.concat([g, g])
    assert doubled.counts.tolist() == [2, 2, 2, 2] and np.allclose(doubled.means, g.means)


def test_mode_pyramid_and_ome_zarr(fib25_crop, tmp_path):
    labels = np.array([[[1, 1], [2, 2]], [[2, 3], [3, 3]]])
    assert downsample_mode(labels).tolist() == [[[2]]]      # 2 and 3 thrice: the smaller
    assert downsample_mode(np.array([[[5, 5], [7, 7]], [[7, 5], [9, 9]]])).item() == 5
    assert downsample_mode(np.arange(27).reshape(3, 3, 3)).shape == (2, 2, 2)
    boundary, _ = fib25_crop
    prediction = tmp_path / 'pred.zarr'
    array = zarr.open_array(store=str(prediction), path='probabilities', mode='w',
                            shape=(2,) + boundary.shape, chunks=(2, 16, 32, 32), dtype='f4')
    array[:] = np.stack([1 - boundary, boundary])
    array.attrs.update({'resolution': [10, 10, 10], 'offset': [100, 0, 50]})
    output = tmp_path / 'seg.zarr'
    report = segment_to_file(prediction, output, block_shape=(16, 32, 32), progress=False)
    assert report.n_blocks == 3 * 2 * 2 and report.n_segments > 5
    group = zarr.open_group(store=str(output), mode='r')
    levels = [group[str(k)] for k in range(3)]
    assert [a.shape for a in levels] == [(40, 64, 64), (20, 32, 32), (10, 16, 16)]
    np.testing.assert_array_equal(levels[1][:], downsample_mode(levels[0][:]))
    segment_to_file(prediction, tmp_path / 'one.zarr', block_shape=(40, 64, 64), progress=False)
    one = zarr.open_group(store=str(tmp_path / 'one.zarr'), mode='r')
    for level in range(3):                  # one block and 12 blocks: the same pyramid
        np.testing.assert_array_equal(one[str(level)][:], levels[level][:])
    assert level_key(output) == '0' and level_key(prediction) is None
    entry = group.attrs['ome']['multiscales'][0]
    assert entry['datasets'][1]['coordinateTransformations'] == [
        {'type': 'scale', 'scale': [20.0, 20.0, 20.0]},
        {'type': 'translation', 'translation': [105.0, 5.0, 55.0]}]
    assert entry['axes'][0] == {'name': 'z', 'type': 'space', 'unit': 'nanometer'}
    describe_prediction(prediction)
    models = pytest.importorskip('ome_zarr_models.v05')
    models.Image.from_zarr(group)
    models.Image.from_zarr(zarr.open_group(store=str(prediction), mode='r'))


def test_blockwise_evaluation_equals_in_memory(fib25_crop):
    boundary, ids = fib25_crop
    seg = segment_volume(boundary, merge_threshold=0.3)
    whole = scores(Contingency.of(seg, ids))
    for block_shape in [(7, 9, 11), (40, 64, 64), (1, 64, 5)]:
        assert evaluate_sources(seg, ids, block_shape=block_shape) == pytest.approx(
            whole, abs=1e-12)


def test_affinity_run_resumes_and_refuses_other_settings(fib25_crop, tmp_path):
    _, ids = fib25_crop
    path = tmp_path / 'affinities.zarr'
    zarr.open_array(store=str(path), mode='w', shape=(3,) + ids.shape,
                    dtype='uint8')[:] = ids2affinities(ids) * 255
    output = tmp_path / 'seg.zarr'
    options = dict(affinities=True, nhood=[[-1, 0, 0], [0, -1, 0], [0, 0, -1]],
                   block_shape=(16, 32, 32), seed_threshold=0.9, progress=False)
    first = segment_to_file(path, output, keep_work=True, **options)
    assert first.resumed['basins'] == 0
    again = segment_to_file(path, output, **options)        # complete: nothing redone
    assert again.n_segments == first.n_segments and not (tmp_path / 'seg.zarr.work').exists()
    with pytest.raises(ConfigError, match='another run'):
        segment_to_file(path, output, **{**options, 'seed_threshold': 0.8})


def test_a_sweep_equals_separate_runs_and_varies_only_the_agglomeration(fib25_crop):
    boundary, _ = fib25_crop
    sweep = [{}, {'merge_threshold': 0.55}, {'merge_threshold': 0.55, 'min_size': 80},
             {'min_seed_size': 30}]
    fixed = {'seed_threshold': 0.6, 'seed_erosion': 1.0}
    results = list(blockwise_segmentation.sweep_volume(boundary, sweep, (16, 32, 64), **fixed))
    assert len(results) == len(sweep) and len({r.tobytes() for r in results}) == len(sweep)
    for entry, result in zip(sweep, results):
        np.testing.assert_array_equal(result, segment_volume(boundary, **fixed, **entry),
                                      err_msg=str(entry))
    with pytest.raises(ConfigError, match=r"sets \['seed_threshold'\]; a sweep reuses the basins"):
        next(blockwise_segmentation.sweep_volume(boundary, [{'seed_threshold': 0.9}]))
    with pytest.raises(ConfigError, match='No seeds'):
        next(blockwise_segmentation.sweep_volume(np.ones((4, 5, 6), np.float32), [{}]))
