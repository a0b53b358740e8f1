"""Nearest and long-range affinities in FIB-25 with a small isotropic 3-D U-Net, sized for a CPU.

Train:     elektronn2-train examples/affinities_fib25.py --gpu none
Inspect:   python examples/affinities_fib25.py
Evaluate:  python examples/evaluate_fib25_affinities.py RUN_DIR/model-final.mdl
           (blockwise mean-affinity segmentation, VOI and adapted Rand error)

Data as in neuro3d_lite.py: FIB-25 z 0-159 train, z 160-199 validate, z 200-249 are
the test volume, never seen while training. The targets are affinities computed
from the neuron ids by the batch creator (``affinities=True``): channel k of output
voxel p is 1 where p and p + offset k belong to the same neuron, else 0.
Besides the three nearest neighbours (the edges a segmentation floods along) the net
learns long-range edges 3 and 9 voxels back along z, y and x (Lee et al. 2017): they
see across thin gaps in a membrane and teach the net whether two voxels a few
voxels apart belong together. Partners beyond the output region are sampled, with
the same warp, from the labels around it; edges whose partner lies outside the
label volume are unknown (target -1) and count neither in the loss nor in the errors.

The net is unet3d_iso's U-Net (16, 32, 64 filters, two poolings of 2, 3 x 3 x 3
valid convolutions, input 68^3 -> dense output 28^3) with a two-class softmax per
edge (a per-edge binary cross-entropy; ``Softmax(n_indep=9)``, the form MalisNLL
also takes) instead of one boundary softmax. The affinity of edge k is output
channel 2k + 1. The spatial tags are z,y,x, so the offsets below are (z, y, x),
the order of the volumes. About 45 minutes on one CPU thread (OMP_NUM_THREADS=1).
"""
import numpy as np

from elektronn2.data import HDF5Source, SubVolume
from elektronn2.data.datasets import get_path

#: Affinity edges (z, y, x): voxel p joins p + offset; the first three are the nearest
#: neighbours, the segmentation's edges.
_OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1],
            [-3, 0, 0], [0, -3, 0], [0, 0, -3],
            [-9, 0, 0], [0, -9, 0], [0, 0, -9]]

_FIB25 = get_path('fib25_training_sample2') / 'fib25_training_sample2.h5'
_RAW = HDF5Source(_FIB25, 'volumes/raw')
_IDS = HDF5Source(_FIB25, 'volumes/labels/neuron_ids')
_SPLIT = [np.s_[:160], np.s_[160:200]]  # training and validation cubes (z ranges)

save_name = 'affinities_fib25'
data_class = 'BatchCreatorImage'
data_init_kwargs = {
    'd_files': [SubVolume(_RAW, z) for z in _SPLIT],
    'l_files': [SubVolume(_IDS, z) for z in _SPLIT],
    'valid_cubes': [1],
    'aniso_factor': 1,  # isotropic voxels
    'border_mode': 'mirror',  # the 40 validation slices are fewer than the 68 of a patch
    'target_discrete_ix': [0],  # neuron ids: nearest-neighbour sampling
}
data_batch_args = {
    'affinities': True,
    'affinity_offsets': _OFFSETS,
    'grey_augment_channels': [0],
    'warp': 0.5,
    'warp_args': {'lock_z': False},  # isotropic: rotations about every axis
}
background_processes = 1
batch_size = 1
n_steps = 15000             # 40-50 minutes on one CPU thread (5-6 steps/s)
max_runtime = 45 * 60
history_freq = 1000
monitor_batch_size = 20
param_save_it = 4000
optimiser = 'Adam'
optimiser_params = {'lr': 1e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 1e-5}
schedules = {'lr': {'lindec': [n_steps, 1e-3]}}  # from 1e-3 down to 0 at the end
_FEATURES = (16, 32, 64)  # per resolution level, finest first


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 68, 68, 68), 'b,f,z,y,x', name='raw')
    skips, out = [], inp
    for level, n_f in enumerate(_FEATURES):
        out = nm.Conv(out, n_f, (3, 3, 3))
        out = nm.Conv(out, n_f, (3, 3, 3))
        if level < len(_FEATURES) - 1:
            skips.append(out)
            out = nm.Pool(out, (2, 2, 2))
    for skip, n_f in zip(reversed(skips), reversed(_FEATURES[:-1])):
        out = nm.UpConvMerge(skip, out, n_f)
        out = nm.Conv(out, n_f, (3, 3, 3))
        out = nm.Conv(out, n_f, (3, 3, 3))
    # per edge k: (not connected, connected) in channels 2k, 2k + 1
    logits = nm.Conv(out, 2 * len(_OFFSETS), (1, 1, 1), activation_func='lin', name='edges')
    probs = nm.Softmax(logits, n_class=2, n_indep=len(_OFFSETS), name='affinities')
    # int16 targets, one per edge: 1 connected, 0 not, -1 unknown (left out of both)
    target = nm.Input_like(probs, override_f=1, name='target', dtype='int16')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    errors = nm.Errors(probs, target, target_is_sparse=True)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs, prediction_ext=[loss, errors, probs])
    return model


if __name__ == '__main__':
    from _inspect_model import inspect_example
    inspect_example(create_model, __file__)
