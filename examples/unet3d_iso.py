"""Neuron boundaries in FIB-25 with a small isotropic 3-D U-Net, sized for a CPU.

Train:     elektronn2-train examples/unet3d_iso.py
Inspect:   python examples/unet3d_iso.py
Evaluate:  python examples/evaluate_fib25.py RUN_DIR/model-final.mdl --blockwise --learned --gala
           (watershed, learned agglomeration, VOI, Rand; the final models of two runs
           given together are an ensemble: docs/results.rst)

Data as in neuro3d_lite.py (FIB-25, boundaries derived from the neuron ids; z 200-249
held out), but validated on z 100-159, which is as dense as the test volume (see
_SPLIT). FIB-25's voxels are isotropic, so unlike ELEKTRONN2's anisotropic
networks this U-Net convolves and pools alike along z, y and x: two poolings of 2 and
back up with UpConvMerge, 3 x 3 x 3 valid convolutions. Input 76^3 -> a dense output
of 36^3 (stride 1), about 0.14 MMAC per output voxel: ten times less than
neuro3d_lite needs for a dense prediction, and every voxel of the output region is a
training target. (No batch normalisation: with one patch per batch it
normalises every patch by its own statistics while training, but by running averages
when predicting, which costs accuracy.)
"""
import numpy as np

from elektronn2.data import BoundaryLabels, HDF5Source, SubVolume
from elektronn2.data.datasets import get_path

_FIB25 = get_path('fib25_training_sample2') / 'fib25_training_sample2.h5'
_RAW = HDF5Source(_FIB25, 'volumes/raw')
_BOUNDARIES = BoundaryLabels(HDF5Source(_FIB25, 'volumes/labels/neuron_ids'))
#: Training cubes z 0-99 and 160-199, validation cube z 100-159 (z 200-249 is the test).
#: The validation cube is as dense as the test volume (neuron boundaries are 13-15 % of
#: the voxels in both; z 160-199, the other examples' validation cube, is the sparsest
#: part of the volume at 9-11 %), so segmentation settings chosen on it carry over.
_SPLIT = [np.s_[:100], np.s_[160:200], np.s_[100:160]]

save_name = 'unet3d_iso'
data_class = 'BatchCreatorImage'
data_init_kwargs = {
    'd_files': [SubVolume(_RAW, z) for z in _SPLIT],
    'l_files': [SubVolume(_BOUNDARIES, z) for z in _SPLIT],
    'valid_cubes': [2],
    'aniso_factor': 1,  # isotropic voxels
    'border_mode': 'mirror',  # the 40 slices of z 160-199 are fewer than the 76 of a patch
}
data_batch_args = {
    'grey_augment_channels': [0],
    'warp': 0.5,
    'warp_args': {'lock_z': False},  # isotropic: rotations about every axis
}
background_processes = 1
batch_size = 1
n_steps = 14000  # 3.75 hours on one core of a CPU without bf16 units (fp32 steps)
max_runtime = 5 * 3600
history_freq = 1000
monitor_batch_size = 20
param_save_it = 5000
optimiser = 'Adam'
optimiser_params = {'lr': 1e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 1e-5}
schedules = {'lr': {'lindec': [n_steps, 1e-3]}}  # from 1e-3 down to 0 at the end
_FEATURES = (16, 32, 64)  # per resolution level, finest first
#: loss weights of (interior, boundary): the boundary class counts three times, so the
#: net closes more of the thin gaps that merge neurons (docs/results.rst)
_CLASS_WEIGHTS = [1.0, 3.0]


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 76, 76, 76), 'b,f,z,x,y', name='raw')
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
    barrier = nm.Conv(out, 2, (1, 1, 1), activation_func='lin', name='barrier')
    probs = nm.Softmax(barrier)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True,
                                              class_weights=_CLASS_WEIGHTS), name='loss')
    errors = nm.Errors(probs, target, target_is_sparse=True)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs, prediction_ext=[loss, errors, probs])
    return model


if __name__ == '__main__':
    from _inspect_model import inspect_example
    inspect_example(create_model, __file__)
