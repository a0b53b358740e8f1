"""An ELEKTRONN v1 training config that elektronn2-train runs as it is: a CNN for MNIST.

    elektronn2-train examples/v1/mnist_cnn_config.py

The network is described with v1's keys (filters, pool, nof_filters, MLP_layers, ...)
instead of a create_model() function; elektronn2.legacy.declarative builds it. As in
v1, the last layer (n_lab outputs, here 10 for MNIST) is added automatically, and
sizes are in v1's (x, y) order.
"""
# where the run goes: v1 configs appended the run's name to save_path themselves
save_name = 'v1_mnist_cnn'
save_path = '~/elektronn2_training/' + save_name + '/'

# the network
mode = 'img-scalar'        # images in, one class per image out
n_dim = 2
desired_input = 26         # snapped to the nearest size the layers accept
filters = [3, 3]           # per conv layer, (x, y) or one int
pool = [2, 2]
nof_filters = [20, 40]
MLP_layers = [200]
activation_func = 'relu'   # for all layers, or one per layer
dropout_rates = [0, 0, 0.3]
target = 'nll'
n_lab = None               # MNIST: 10

# the data
data_class_name = 'MNISTData'
data_load_kwargs = dict(path=None, convert2image=True, warp_on=0.5, shift_augment=True)
data_batch_kwargs = dict()
background_processes = 1

# the optimisation
batch_size = 50
n_steps = 20000
max_runtime = 30 * 60
history_freq = [500]
monitor_batch_size = 2000
optimizer = 'SGD'
SGD_params = dict(LR=0.02, momentum=0.9)
LR_decay = 0.9
weight_decay = 1e-4
