"""MNIST digits with a small CNN: ELEKTRONN2's MNIST example, tuned for a CPU.

Train:     elektronn2-train examples/mnist.py
Inspect:   python examples/mnist.py        (build, test-run and draw the model)
Evaluate:  python examples/evaluate_mnist.py RUN_DIR/model-final.mdl

MNIST is read from $ELEKTRONN2_DATA/mnist (downloaded there if missing). Training
images are randomly shifted (26 x 26 crops of the 28 x 28 digits) and half of them
mildly warped; the test images are the centred crops.
"""
save_name = 'mnist'
data_class = 'MNISTData'
data_init_kwargs = {'warp_on': 0.5, 'shift_augment': True}
background_processes = 1
batch_size = 128
n_steps = 9000
max_runtime = 30 * 60
history_freq = 1000
monitor_batch_size = 2000
param_save_it = 3000
optimiser = 'Adam'
optimiser_params = {'lr': 2e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 1e-4}
schedules = {'lr': {'lindec': [n_steps, 2e-3]}}  # from 2e-3 down to 0 at the end


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 26, 26), 'b,f,y,x', name='raw')
    out = nm.Conv(inp, 32, (5, 5), (2, 2), batch_normalisation='train')
    out = nm.Conv(out, 64, (3, 3), batch_normalisation='train')
    out = nm.Conv(out, 64, (4, 4), (2, 2), batch_normalisation='train')
    out = nm.Perceptron(out, 256, flatten=True, batch_normalisation='train', dropout_rate=0.4)
    out = nm.Perceptron(out, 10, activation_func='lin')
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
