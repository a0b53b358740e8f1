"""The config that ``elektronn2-demo`` trains: a small CNN on MNIST (ELEKTRONN2 style)."""
save_name = 'demo-mnist'
data_class = 'MNISTData'   # found in $ELEKTRONN2_DATA/mnist, downloaded there if missing
background_processes = 2
n_steps = 1500
max_runtime = 30 * 60
history_freq = 250
monitor_batch_size = 500
param_save_it = 500
optimiser = 'Adam'
optimiser_params = {'lr': 2e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 1e-4}
schedules = {'lr': {'lindec': [1500, 2e-3]}}   # from 2e-3 down to 0 at the last step
batch_size = 64


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 26, 26), 'b,f,y,x', name='raw')
    out = nm.Conv(inp, 16, (3, 3), (2, 2), batch_normalisation='train')
    out = nm.Conv(out, 32, (3, 3), (2, 2), batch_normalisation='train')
    out = nm.Conv(out, 64, (3, 3), (1, 1), batch_normalisation='train')
    out = nm.Perceptron(out, 128, flatten=True, dropout_rate=0.2)
    out = nm.Perceptron(out, 10, activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    errors = nm.Errors(probs, target, target_is_sparse=True)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs, prediction_ext=[loss, errors, probs])
    return model
