"""ELEKTRONN v1's auto-encoder example: compress MNIST to 50 numbers with a tied
auto-encoder, then pre-train a classifier with its encoder.

    python examples/v1/mnist_autoencoder.py [--steps 10000] [--out DIR]

The calls are v1's, unchanged (addTiedAutoencoderChain(..., add_layers_to_network=True),
get_error returning (loss, reconstructions) for regression, embedMatricesInGray, a
'tanh' output layer under 'nll'). v1 imported from elektronn.training.traindata,
elektronn.net.convnet and elektronn.net.introspection; here from elektronn2.legacy.
Figures and parameter files go to --out.
"""
import argparse
import os

import matplotlib

matplotlib.use('Agg')  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402

from elektronn2.legacy import MixedConvNN, MNISTData, embedMatricesInGray  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--steps', type=int, default=10000, help='training steps of each network')
parser.add_argument('--out', default='.', help='directory for the figure and parameter file')
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
param_file = os.path.join(args.out, 'AE-pretraining.param')

data = MNISTData(path=None, convert2image=False, shift_augment=False)  # vectors of 784 pixels

# Auto-encoder: 784 -> 300 -> 200 -> 50 -> 200 -> 300 -> 784, decoder weights tied
batch_size = 100
cnn = MixedConvNN((28 ** 2), input_depth=None)
cnn.addPerceptronLayer(n_outputs=300, activation_func='tanh')
cnn.addPerceptronLayer(n_outputs=200, activation_func='tanh')
cnn.addPerceptronLayer(n_outputs=50, activation_func='tanh')
cnn.addTiedAutoencoderChain(n_layers=None, activation_func='tanh', input_noise=0.3,
                            add_layers_to_network=True)
cnn.compileOutputFunctions(target='regression')
cnn.setOptimizerParams(SGD={'LR': 5e-1, 'momentum': 0.9}, weight_decay=0)

for i in range(args.steps):
    d, labels = data.getbatch(batch_size)
    loss, loss_instance, time_per_step = cnn.trainingStep(d, d, mode='SGD')  # target: the input
    if i % 100 == 0:
        print(f"update: {i}; training error: {loss:.5f}")

loss, test_predictions = cnn.get_error(data.valid_d, data.valid_d)
print(f"Validation reconstruction loss: {loss:.5f}")

plt.figure(figsize=(14, 6))
plt.subplot(121)
images = embedMatricesInGray(data.valid_d[:200].reshape((200, 28, 28)), 1)
plt.imshow(images, interpolation='none', cmap='gray')
plt.title('Data')
plt.subplot(122)
recon = embedMatricesInGray(test_predictions[:200].reshape((200, 28, 28)), 1)
plt.imshow(recon, interpolation='none', cmap='gray')
plt.title('Reconstruction')
plt.savefig(os.path.join(args.out, 'reconstruction.png'))

# Pre-training: a classifier whose first three layers start as the encoder
cnn.saveParameters(param_file, layers=cnn.layers[0:3])  # the encoder only
cnn2 = MixedConvNN((28 ** 2), input_depth=None)
cnn2.addPerceptronLayer(n_outputs=300, activation_func='tanh')
cnn2.addPerceptronLayer(n_outputs=200, activation_func='tanh')
cnn2.addPerceptronLayer(n_outputs=50, activation_func='tanh')
cnn2.addPerceptronLayer(n_outputs=10, activation_func='tanh')  # 10 classes
cnn2.compileOutputFunctions(target='nll')
cnn2.setOptimizerParams(SGD={'LR': 0.005, 'momentum': 0.9}, weight_decay=0)
cnn2.loadParameters(param_file)  # the file holds the first 3 layers only

for i in range(args.steps):
    d, labels = data.getbatch(batch_size)
    cnn2.trainingStep(d, labels, mode='SGD')

loss, error, predictions = cnn2.get_error(data.test_d, data.test_l)
print(f"Test loss: {loss:.4f}, test error: {error * 100:.2f} %")
