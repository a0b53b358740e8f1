"""A recurrent network (GRU or LSTM) that reads MNIST digits row by row.

Train:    elektronn2-train examples/mnist_rnn.py
Inspect:  python examples/mnist_rnn.py

Each 28 x 28 digit becomes a sequence of 28 rows of 28 pixels (axis tag 'r'). One
recurrent step is built as a small graph (row t and the state before it -> the new
state); ``Scan`` runs it over all rows and a Perceptron classifies the last state.
Set ``_CELL = 'LSTM'`` for a long short-term memory instead of a GRU.
"""
_CELL = 'GRU'
_N_HIDDEN = 128

save_name = f'mnist_{_CELL.lower()}'
data_class = 'MNISTData'
data_init_kwargs = {'shift_augment': False}
background_processes = 1
batch_size = 64
n_steps = 20000
max_runtime = 60 * 60
history_freq = 1000
monitor_batch_size = 2000
optimiser = 'Adam'
optimiser_params = {'lr': 2e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 0}
schedules = {'lr': {'lindec': [n_steps, 2e-3]}}  # from 2e-3 down to 0 at the end


def create_model():
    import elektronn2.neuromancer as nm
    image = nm.Input((None, 1, 28, 28), 'b,f,y,x', name='raw')
    rows = nm.Reshape(image, (None, 28, 28), 'b,r,f', name='rows')
    row, _ = nm.split(rows, 'r', index=1, strip_singleton_dims=True, name='row')
    if _CELL == 'GRU':
        state = nm.InitialState_like(row, _N_HIDDEN, name='state')
        step = nm.GRU(row, state, _N_HIDDEN)
    else:
        state = nm.InitialState_like(row, 2 * _N_HIDDEN, name='state')  # [h, c]
        step = nm.LSTM(row, state, _N_HIDDEN)
    last = nm.Scan(step, state, in_iterate=rows, in_iterate_0=row, last_only=True)
    if _CELL == 'LSTM':
        last, _ = nm.split(last, 'f', n_out=2, name='hidden')  # h of the final [h, c]
    out = nm.Perceptron(last, 10, activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    errors = nm.Errors(probs, target, target_is_sparse=True)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=image, target_node=target, loss_node=loss,
                          prediction_node=probs, prediction_ext=[loss, errors, probs])
    return model


if __name__ == '__main__':
    from _inspect_model import inspect_example
    inspect_example(create_model, __file__)
