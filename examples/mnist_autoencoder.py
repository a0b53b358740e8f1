"""An MNIST auto-encoder whose decoder shares (transposed) the encoder's weights.

Train:    elektronn2-train examples/mnist_autoencoder.py
Inspect:  python examples/mnist_autoencoder.py

The encoder maps 784 pixels to 300, 200 and 50 features; ``make_dual`` builds each
decoder layer from its encoder layer with the transposed weights (tied) and a bias
of its own. The loss is the squared reconstruction error of the input image, so
the data class below delivers the images as the targets too.
"""
from elektronn2.data import MNISTData

save_name = 'mnist_autoencoder'
data_class = ('mnist_autoencoder.py', 'MNISTImagesAsTargets')
data_init_kwargs = {'shift_augment': False}
background_processes = 1
batch_size = 100
n_steps = 20000
max_runtime = 30 * 60
history_freq = 1000
monitor_batch_size = 1000
optimiser = 'Adam'
optimiser_params = {'lr': 1e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 0}
schedules = {'lr': {'dec': 0.95}}


class MNISTImagesAsTargets(MNISTData):
    """MNIST batches (images, images): the target of an auto-encoder is its input."""

    def getbatch(self, batch_size, source='train'):
        images, _ = super().getbatch(batch_size, source)
        return images, images


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 28 * 28), 'b,f', name='raw')
    encoders, code = [], inp
    for n_f in (300, 200, 50):
        code = nm.Perceptron(code, n_f, activation_func='tanh', name='encode')
        encoders.append(code)
    decoded = code
    for i, encoder in enumerate(reversed(encoders)):
        last = i == len(encoders) - 1
        decoded = encoder.make_dual(decoded, activation_func='sig' if last else 'tanh',
                                    name='decode')
    target = nm.Input_like(inp, name='target')
    loss = nm.AggregateLoss(nm.SquaredLoss(decoded, target), name='loss')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=decoded, prediction_ext=[loss, decoded])
    return model


if __name__ == '__main__':
    from _inspect_model import inspect_example
    inspect_example(create_model, __file__)
