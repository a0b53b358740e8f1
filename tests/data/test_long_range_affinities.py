"""Affinity targets with any offsets (getbatch(affinities=True, affinity_offsets=...)):
registered with the full volume's affinities, also under warps; unknown edges (partner
outside the labels, or an id < 0) left out of the losses; bad offsets refused."""
import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.data import BatchCreatorImage
from elektronn2.data.labels import check_affinity_offsets, edges_known, ids2affinities
from elektronn2.errors import ConfigError

# network axis order z,x,y; data order of the same edges below
OFFSETS_NET = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -5, 0], [0, 0, 3],
               [1, 2, -1]]
OFFSETS_ZYX = np.array(OFFSETS_NET)[:, [0, 2, 1]]
SHAPE = (14, 30, 32)  # z, y, x
PATCH_NET = (8, 12, 10)  # z, x, y -> output (6, 10, 8), first output 1 voxel in


def id_volume(shape=SHAPE, seed=0) -> np.ndarray:
    """int32 ids 0..6 in blocks of 2 x 5 x 4 voxels, and -1 (unlabelled) in one block."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 7, [s // b + 1 for s, b in zip(shape, (2, 5, 4))])
    ids = coarse.repeat(2, 0).repeat(5, 1).repeat(4, 2)[:shape[0], :shape[1], :shape[2]]
    ids = ids.astype(np.int32)
    ids[6:8, 10:15, 12:16] = -1
    return ids


def position_raw(shape=SHAPE) -> np.ndarray:
    """float32 raw data whose value is the voxel's flat index (decodes patch corners)."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def make_heads(k: int) -> dict:
    """Input and three target nodes of one 3-D stride-1 net (tags z,x,y) with ``k`` edges:
    affinities for a Softmax per edge (int16), for sigmoid outputs (float32), and ids."""
    inp = nm.Input((None, 1) + PATCH_NET, 'b,f,z,x,y', name='raw')
    features = nm.Conv(inp, 3, (3, 3, 3))
    probs = nm.Softmax(nm.Conv(features, 2 * k, (1, 1, 1), activation_func='lin'),
                       n_class=2, n_indep=k)
    sigmoid = nm.Conv(features, k, (1, 1, 1), activation_func='sigmoid', name='sig')
    return {'input': inp, 'probs': probs, 'sigmoid': sigmoid,
            'int': nm.Input_like(probs, override_f=1, name='aff_int', dtype='int16'),
            'float': nm.Input_like(sigmoid, name='aff_float'),
            'ids': nm.Input_like(sigmoid, override_f=1, name='ids')}


@pytest.fixture
def heads():
    return make_heads(len(OFFSETS_NET))


def creator(heads, target, labels=None, raw_shape=SHAPE, **kwargs):
    labels = id_volume() if labels is None else labels
    return BatchCreatorImage(heads['input'], heads[target], d_files=[position_raw(raw_shape)],
                             l_files=[labels], target_discrete_ix=[0], aniso_factor=1,
                             **kwargs)


def expected(ids: np.ndarray, offsets: np.ndarray, start, out, unknown):
    """The full volume's affinities at the output region starting at ``start`` (z, y, x)."""
    aff = ids2affinities(ids, offsets).astype(np.float32)
    aff[~edges_known(ids >= 0, offsets)] = unknown
    return aff[(slice(None),) + tuple(slice(s, s + n) for s, n in zip(start, out))]


@pytest.mark.parametrize('kind, unknown', [('int', -1), ('float', np.nan)])
def test_targets_equal_the_volume_affinities_at_the_sampled_positions(heads, kind, unknown):
    data = creator(heads, kind, seed=3)
    g = data.geometry
    images, target = data.getbatch(6, affinities=True, affinity_offsets=OFFSETS_NET)
    assert target.shape == (6, len(OFFSETS_NET)) + g.net_order(g.out)
    assert target.dtype == (np.int16 if kind == 'int' else np.float32)
    ids, seen_unknown = id_volume(), 0
    for image, aff in zip(images, target):
        corner = np.unravel_index(int(g.patch_from_net(image)[0, 0, 0, 0]), SHAPE)
        start = np.add(corner, np.asarray(g.offsets, int))
        want = expected(ids, OFFSETS_ZYX, start, g.out, unknown)
        np.testing.assert_array_equal(g.patch_from_net(aff), want)  # NaN == NaN here
        seen_unknown += int(np.sum(want == -1) + np.sum(np.isnan(want)))
    assert seen_unknown > 0  # the -1 block or partners beyond the volume


def test_warped_targets_stay_registered(heads):
    """Under random warps (rotations, flips, swaps, elastic) each edge whose partner is
    an output voxel joins the ids sampled there; the others are filled in from the
    labels beyond the output region."""
    args = dict(warp=1, warp_args={'lock_z': False, 'elastic': 2.0, 'elastic_spacing': 6})
    with_aff, with_ids = creator(heads, 'int', seed=5), creator(heads, 'ids', seed=5)
    _, target = with_aff.getbatch(8, affinities=True, affinity_offsets=OFFSETS_NET, **args)
    _, ids = with_ids.getbatch(8, **args)
    assert with_aff.n_warped == 8
    g = with_aff.geometry
    from elektronn2.data.labels import offset_slices
    beyond = 0
    for aff, sampled in zip(target, ids):
        aff, sampled = g.patch_from_net(aff), g.patch_from_net(sampled)[0]
        want = ids2affinities(sampled, OFFSETS_ZYX).astype(np.int16)
        want[~edges_known(sampled >= 0, OFFSETS_ZYX)] = -1
        for k, offset in enumerate(OFFSETS_ZYX):
            here, _ = offset_slices(g.out, offset)
            np.testing.assert_array_equal(aff[k][here], want[k][here])
            outside = np.ones(g.out, bool)
            outside[here] = False
            beyond += int(np.sum(aff[k][outside] >= 0))
    assert beyond > 0  # edges leaving the output region got their partners' labels


def test_unknown_edges_beyond_the_labels_are_left_out_of_the_losses():
    """Labels 2 slices smaller than the image on each side: a partner 6 slices back lies
    outside them for the first output slices of every patch."""
    heads, ids = make_heads(2), id_volume()
    data = creator(heads, 'int', labels=ids[2:-2], seed=1)
    offsets = [[-6, 0, 0], [0, 0, -1]]
    _, target = data.getbatch(3, affinities=True, affinity_offsets=offsets)
    assert (target[:, 0] == -1).any() and (target[:, 1] >= 0).all()
    probs = heads['probs']
    logits = torch.randn((3, 4) + target.shape[2:], requires_grad=True)
    nll = nm.MultinoulliNLL(probs, heads['int'], target_is_sparse=True)
    target_t = torch.as_tensor(target)
    nll.forward(torch.softmax(logits.unflatten(1, (2, 2)), 2).flatten(1, 2), target_t,
                logits).sum().backward()
    unknown = (target_t == -1).repeat_interleave(2, dim=1)
    assert (logits.grad[unknown] == 0).all() and (logits.grad[~unknown] != 0).all()
    errors = nm.Errors(probs, heads['int'], target_is_sparse=True)
    assert errors.forward(torch.zeros(3, 4, *target.shape[2:]),
                          torch.where(target_t < 0, 5, target_t)).item() > 0

    floats = creator(heads, 'float', labels=ids[2:-2], seed=1)
    _, target = floats.getbatch(3, affinities=True, affinity_offsets=offsets)
    assert np.isnan(target[:, 0]).any() and not np.isnan(target[:, 1]).any()
    pred = torch.rand(target.shape, requires_grad=True)
    bce = nm.BinaryNLL(heads['sigmoid'], heads['float'])
    bce.forward(pred, torch.as_tensor(target)).sum().backward()
    known = ~np.isnan(target)
    assert (pred.grad[~known] == 0).all() and (pred.grad[known] != 0).all()


def test_malis_batches_with_long_range_offsets():
    data = creator(make_heads(4), 'int', labels=id_volume()[2:-2], seed=2)
    images, aff, seg = data.getbatch(2, affinities='malis',
                                     affinity_offsets=[[-1, 0, 0], [0, -1, 0], [0, 0, -1],
                                                       [-6, 0, 0]])
    assert aff.shape == (2, 4, 6, 10, 8) and seg.shape == (2, 1, 6, 10, 8)
    assert set(np.unique(aff)) <= {0, 1}  # MALIS: unknown edges are 0
    z_linked = aff[:, 0, 1:] == 1
    assert np.all(seg[:, 0, 1:][z_linked] == seg[:, 0, :-1][z_linked])


@pytest.fixture
def strided():
    """A strided 2-D net (tags x,y): input 26 x 26 -> output 12 x 12, stride 2."""
    inp = nm.Input((None, 1, 26, 26), 'b,f,x,y', name='raw')
    sigmoid = nm.Conv(nm.Conv(inp, 3, (3, 3), (2, 2)), 2, (1, 1), activation_func='sigmoid')
    return {'input': inp, 'float': nm.Input_like(sigmoid, name='aff'),
            'ids': nm.Input_like(sigmoid, override_f=1, name='ids')}


def test_default_offsets_join_neighbouring_output_voxels(strided):
    """Default: the previous output voxel along each axis (stride 2 input voxels), as
    ids2affinities of the output grid's ids, now also at the first output voxels."""
    volume = np.stack([id_volume((3, 40, 44), seed)[0] for seed in range(3)])
    with_aff = creator(strided, 'float', labels=volume, raw_shape=volume.shape, seed=4)
    with_ids = creator(strided, 'ids', labels=volume, raw_shape=volume.shape, seed=4)
    _, target = with_aff.getbatch(4, affinities=True)
    _, ids = with_ids.getbatch(4)
    assert target.shape == (4, 2, 12, 12)
    old = np.stack([ids2affinities(i[0]) for i in ids]).astype(np.float32)  # x, then y
    old[np.stack([~edges_known(i[0] >= 0, -np.eye(2, dtype=int)) for i in ids])] = np.nan
    np.testing.assert_array_equal(target[:, 0, 1:], old[:, 0, 1:])
    np.testing.assert_array_equal(target[:, 1, :, 1:], old[:, 1, :, 1:])
    assert not np.isnan(target[:, 0, 0]).all()  # the first row has partners now


def test_bad_offsets_are_config_errors(heads, strided):
    data = creator(heads, 'int')
    cases = [([[-1, 0]], 'each with 3 integers'), ([[-1, 0], [0]], 'each with 3 integers'),
             ('zyx', 'each with 3 integers'), ([], 'each with 3 integers'),
             ([[-1.5, 0, 0]], 'whole voxels'), ([[0, 0, 0]], 'all zero'),
             ([[-1, 0, 0], [0, 1, 0], [-1, 0, 0]], r'repeat \[-1, 0, 0\]')]
    for offsets, message in cases:
        with pytest.raises(ConfigError, match=message):
            data.getbatch(1, affinities=True, affinity_offsets=offsets)
    with pytest.raises(ConfigError, match="affinities=False; pass affinities=True"):
        data.getbatch(1, affinity_offsets=[[-1, 0, 0]])
    with pytest.raises(ConfigError, match=r"1 affinity edge\(s\) .* target node of 7 chan"):
        data.getbatch(1, affinities=True, affinity_offsets=[[-1, 0, 0]])
    with pytest.raises(ConfigError, match='offsets are whole voxels'):
        check_affinity_offsets([[np.nan, 0, 0]], 3)
    volume = np.stack([id_volume((3, 40, 44))[0]] * 3)
    planar = creator(strided, 'float', labels=volume, raw_shape=volume.shape)
    with pytest.raises(ConfigError, match=r'stride 1, but the target x,y has strides \(2, 2\)'):
        planar.getbatch(1, affinities=True, affinity_offsets=[[-1, 0], [0, -1]])
    _, dense = planar.getbatch(1, affinities=True, affinity_offsets=[[-1, 0], [0, -3]],
                               force_dense=True)
    assert dense.shape == (1, 2, 23, 23)
