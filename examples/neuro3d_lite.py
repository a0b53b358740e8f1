"""Neuron boundaries in FIB-25 with ELEKTRONN2's "neuro3d_lite" CNN (strided 3-D convolutions).

Train:     elektronn2-train examples/neuro3d_lite.py
Inspect:   python examples/neuro3d_lite.py
Evaluate:  python examples/evaluate_fib25.py RUN_DIR/model-final.mdl  (watershed, VOI, Rand)

Data: $ELEKTRONN2_DATA/em/fib25_training_sample2.h5, 250^3 voxels of 10 nm. The boundary
targets are derived on the fly from the neuron ids (1 where a 6-neighbour belongs to
another neuron); z 0-159 is for training, z 160-199 for validation, and z 200-249 is
held out for the test in evaluate_fib25.py. Input 11 x 155 x 155 -> output 4 x 30 x 30
with strides (2, 4, 4) and a field of view of 5 x 39 x 39.
"""
import numpy as np

from elektronn2.data import BoundaryLabels, HDF5Source, SubVolume
from elektronn2.data.datasets import get_path

_FIB25 = get_path('fib25_training_sample2') / 'fib25_training_sample2.h5'
_RAW = HDF5Source(_FIB25, 'volumes/raw')
_BOUNDARIES = BoundaryLabels(HDF5Source(_FIB25, 'volumes/labels/neuron_ids'))
_SPLIT = [np.s_[:160], np.s_[160:200]]  # training and validation cubes (z ranges)

save_name = 'neuro3d_lite'
data_class = 'BatchCreatorImage'
data_init_kwargs = {
    'd_files': [SubVolume(_RAW, z) for z in _SPLIT],
    'l_files': [SubVolume(_BOUNDARIES, z) for z in _SPLIT],
    'valid_cubes': [1],
    'aniso_factor': 1,  # isotropic voxels
}
data_batch_args = {
    'grey_augment_channels': [0],
    'warp': 0.5,
    'warp_args': {'sample_aniso': True, 'perspective': True},
}
background_processes = 1
batch_size = 1
n_steps = 15000             # about an hour on two CPU cores; 150000 on a GPU
max_runtime = 75 * 60
history_freq = 1000
monitor_batch_size = 30
param_save_it = 5000
optimiser = 'Adam'
optimiser_params = {'lr': 5e-4, 'mom': 0.9, 'beta2': 0.999, 'wd': 0.5e-4}
schedules = {'lr': {'lindec': [n_steps, 5e-4]}}  # from 5e-4 down to 0 at the end


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 11, 155, 155), 'b,f,z,x,y', name='raw')
    out = nm.Conv(inp, 20, (1, 4, 4), (1, 2, 2))
    out = nm.Conv(out, 40, (3, 3, 3), (1, 2, 2))
    out = nm.Conv(out, 150, (2, 4, 4), (2, 1, 1))
    out = nm.Conv(out, 200, (1, 3, 3))
    out = nm.Conv(out, 200, (1, 3, 3))
    out = nm.Conv(out, 200, (1, 1, 1))
    out = nm.Conv(out, 2, (1, 1, 1), activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    errors = nm.Errors(probs, target, target_is_sparse=True)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs, prediction_ext=[loss, errors, probs])
    return model


if __name__ == '__main__':
    from _inspect_model import inspect_example
    inspect_example(create_model, __file__)
