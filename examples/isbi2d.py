"""Membranes in the ISBI 2012 ssTEM slices with a 2-D U-Net (ELEKTRONN2's U-Net, made light).

Train:     elektronn2-train examples/isbi2d.py
Inspect:   python examples/isbi2d.py
Evaluate:  python examples/evaluate_isbi.py RUN_DIR/model-final.mdl  (pixel F1, slices 25-29)

Data: $ELEKTRONN2_DATA/em/isbi2012.h5, 30 labelled slices of 512 x 512. The labels mark
membranes with 0 and cell interior with 255; MappedLabels turns them into the classes
1 (membrane) and 0 on the fly. Slices 0-21 train, 22-24 validate; 25-29 are held out for
the test in evaluate_isbi.py. Valid 3 x 3 convolutions, four poolings and UpConvMerge:
input 284 x 284 -> output 100 x 100 (stride 1, field of view 215 x 215). Half of the
training patches are warped (rotation, shear, stretch, flips) and elastically deformed.
The recipe's choices and what each did on the validation slices: docs/results.rst.
"""
import numpy as np

from elektronn2.data import HDF5Source, MappedLabels, SubVolume
from elektronn2.data.datasets import get_path

_ISBI = get_path('isbi2012') / 'isbi2012.h5'
_RAW = HDF5Source(_ISBI, 'train/raw')
_MEMBRANES = MappedLabels(HDF5Source(_ISBI, 'train/labels'), {0: 1, 255: 0})
_SPLIT = [np.s_[:22], np.s_[22:25]]  # training and validation slices

save_name = 'isbi2d'
data_class = 'BatchCreatorImage'
data_init_kwargs = {
    'd_files': [SubVolume(_RAW, z) for z in _SPLIT],
    'l_files': [SubVolume(_MEMBRANES, z) for z in _SPLIT],
    'valid_cubes': [1],
    'border_mode': 'mirror',
}
data_batch_args = {'grey_augment_channels': [0], 'warp': 0.5,
                   'warp_args': {'elastic': 8.0, 'elastic_spacing': 24.0}}
background_processes = 1
batch_size = 1
n_steps = 25000
max_runtime = 57 * 60
history_freq = 1000
monitor_batch_size = 20
param_save_it = 5000
optimiser = 'Adam'
optimiser_params = {'lr': 1e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 1e-5}
schedules = {'lr': {'lindec': [n_steps, 1e-3]}}  # from 1e-3 down to 0 at the end
_FEATURES = (16, 32, 64, 128, 256)  # per resolution level, finest first


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 284, 284), 'b,f,x,y', name='raw')
    skips, out = [], inp
    for level, n_f in enumerate(_FEATURES):
        out = nm.Conv(out, n_f, (3, 3))
        out = nm.Conv(out, n_f, (3, 3))
        if level < len(_FEATURES) - 1:
            skips.append(out)
            out = nm.Pool(out, (2, 2))
    for skip, n_f in zip(reversed(skips), reversed(_FEATURES[:-1])):
        out = nm.UpConvMerge(skip, out, n_f)
        out = nm.Conv(out, n_f, (3, 3))
        out = nm.Conv(out, n_f, (3, 3))
    membrane = nm.Conv(out, 2, (1, 1), activation_func='lin', name='membrane')
    probs = nm.Softmax(membrane)
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
