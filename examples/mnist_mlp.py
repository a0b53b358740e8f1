"""MNIST digits with a multi-layer perceptron on flat pixel vectors (ELEKTRONN's MLP example).

Train:    elektronn2-train examples/mnist_mlp.py
Inspect:  python examples/mnist_mlp.py

The input is a flat vector of 26 x 26 = 676 pixels (randomly shifted crops of the
digits); MNISTData delivers vectors because the input node has no spatial axes.
"""
save_name = 'mnist_mlp'
data_class = 'MNISTData'
data_init_kwargs = {'warp_on': 0.5, 'shift_augment': True}
background_processes = 1
batch_size = 64
n_steps = 20000
max_runtime = 30 * 60
history_freq = 1000
monitor_batch_size = 2000
optimiser = 'Adam'
optimiser_params = {'lr': 1e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 1e-4}
schedules = {'lr': {'lindec': [n_steps, 1e-3]}}  # from 1e-3 down to 0 at the end


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 26 * 26), 'b,f', name='raw')
    out = nm.Perceptron(inp, 300, dropout_rate=0.2)
    out = nm.Perceptron(out, 300, dropout_rate=0.2)
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
