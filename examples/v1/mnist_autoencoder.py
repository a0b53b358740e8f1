"""ELEKTRONN v1's auto-encoder example, v1 style: pre-train an MLP as a tied auto-encoder,
then train a classifier that starts from the encoder's weights.

    python examples/v1/mnist_autoencoder.py [--steps 4000] [--params ae.safetensors]

Runs a v1 script after small edits: imports from elektronn2.legacy, Python 3's print(),
and no switching off of the input noise by hand (it acts in training steps only).
"""
import argparse
import os
import tempfile

from elektronn2.legacy import MixedConvNN, MNISTData

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--steps', type=int, default=4000, help='training steps of each network')
parser.add_argument('--params', default=os.path.join(tempfile.gettempdir(), 'ae-pretraining.param'),
                    help='where the encoder parameters are saved')
args = parser.parse_args()

data = MNISTData(path=None, convert2image=False, shift_augment=False)  # vectors of 784 pixels
batch_size = 100
encoder_sizes = (300, 200, 50)

# 1. the auto-encoder: 784 -> 300 -> 200 -> 50 -> 200 -> 300 -> 784, decoder weights tied
ae = MixedConvNN(28 ** 2, input_depth=None, name='autoencoder')
for n in encoder_sizes:
    ae.addPerceptronLayer(n_outputs=n, activation_func='tanh')
ae.addTiedAutoencoderChain(n_layers=None, activation_func='tanh', input_noise=0.3)
ae.compileOutputFunctions(target='regression')
ae.setOptimizerParams(SGD={'LR': 0.2, 'momentum': 0.9}, weight_decay=0)
for i in range(args.steps):
    d, _ = data.getbatch(batch_size)
    loss, _, _ = ae.trainingStep(d, d, mode='SGD')  # the input is the target
    if i % 1000 == 0:
        print(f"auto-encoder step {i}: reconstruction loss {loss:.4f}")
valid_loss, valid_rms, reconstructions = ae.get_error(data.valid_d, data.valid_d)
print(f"Validation reconstruction: loss {valid_loss:.4f}, RMS error {valid_rms:.4f}")
ae.saveParameters(args.params, layers=ae.layers[:3])  # the encoder only

# 2. a classifier with the same encoder layers and a 10-class output layer
classifier = MixedConvNN(28 ** 2, input_depth=None, name='classifier')
for n in encoder_sizes:
    classifier.addPerceptronLayer(n_outputs=n, activation_func='tanh')
classifier.addPerceptronLayer(n_outputs=10, activation_func='linear')
classifier.compileOutputFunctions(target='nll')
classifier.setOptimizerParams(SGD={'LR': 0.005, 'momentum': 0.9}, weight_decay=0)
classifier.loadParameters(args.params)  # the three encoder layers; the output layer is new
for i in range(args.steps):
    d, labels = data.getbatch(batch_size)
    loss, _, _ = classifier.trainingStep(d, labels, mode='SGD')
    if i % 1000 == 0:
        print(f"classifier step {i}: loss {loss:.4f}")
test_loss, test_error, _ = classifier.get_error(data.test_d, data.test_l)
print(f"Test loss {test_loss:.4f}, test error {test_error:.2%}")
