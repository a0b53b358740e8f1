"""Neuron boundaries in FIB-25 with ELEKTRONN2's "unet3d_lite", a 3-D U-Net (Cicek et al. 2016).

Train:     elektronn2-train examples/unet3d_lite.py
Inspect:   python examples/unet3d_lite.py
Evaluate:  python examples/evaluate_fib25.py RUN_DIR/model-final.mdl  (watershed, VOI, Rand)

Data and split as in neuro3d_lite.py (FIB-25, boundaries derived from the neuron ids;
z 200-249 held out). Three poolings of (1, 2, 2) and back up with UpConvMerge: input
22 x 140 x 140 -> a dense output of 10 x 52 x 52 (stride 1). About 66 GMAC per patch:
a network for a GPU.
"""
import numpy as np

from elektronn2.data import BoundaryLabels, HDF5Source, SubVolume
from elektronn2.data.datasets import get_path

_FIB25 = get_path('fib25_training_sample2') / 'fib25_training_sample2.h5'
_RAW = HDF5Source(_FIB25, 'volumes/raw')
_BOUNDARIES = BoundaryLabels(HDF5Source(_FIB25, 'volumes/labels/neuron_ids'))
_SPLIT = [np.s_[:160], np.s_[160:200]]  # training and validation cubes (z ranges)

save_name = 'unet3d_lite'
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
n_steps = 150000
max_runtime = 24 * 3600
history_freq = 200
monitor_batch_size = 30
optimiser = 'Adam'
optimiser_params = {'lr': 5e-4, 'mom': 0.9, 'beta2': 0.999, 'wd': 0.5e-4}
schedules = {'lr': {'dec': 0.995}}


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 22, 140, 140), 'b,f,z,x,y', name='raw')
    # contracting path: full, mid, low and very low in-plane resolution
    conv0 = nm.Conv(inp, 32, (1, 3, 3))
    conv1 = nm.Conv(conv0, 32, (1, 3, 3))
    down0 = nm.Pool(conv1, (1, 2, 2))
    conv2 = nm.Conv(down0, 64, (1, 3, 3))
    conv3 = nm.Conv(conv2, 64, (1, 3, 3))
    down1 = nm.Pool(conv3, (1, 2, 2))
    conv4 = nm.Conv(down1, 128, (1, 3, 3))
    conv5 = nm.Conv(conv4, 128, (1, 3, 3))
    down2 = nm.Pool(conv5, (1, 2, 2))
    conv6 = nm.Conv(down2, 256, (3, 3, 3))
    conv7 = nm.Conv(conv6, 256, (3, 3, 3))
    # expanding path: up-convolve, crop the skip connection to fit, concatenate
    merge0 = nm.UpConvMerge(conv5, conv7, 512)
    up4 = nm.Conv(merge0, 256, (1, 3, 3))
    up5 = nm.Conv(up4, 256, (1, 3, 3))
    merge1 = nm.UpConvMerge(conv3, up5, 256)
    up7 = nm.Conv(merge1, 128, (3, 3, 3))
    up8 = nm.Conv(up7, 128, (3, 3, 3))
    merge2 = nm.UpConvMerge(conv1, up8, 128)
    up10 = nm.Conv(merge2, 64, (3, 3, 3))
    up11 = nm.Conv(up10, 64, (3, 3, 3))
    barrier = nm.Conv(up11, 2, (1, 1, 1), activation_func='lin', name='barrier')
    probs = nm.Softmax(barrier)
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
