"""ELEKTRONN v1's recurrent layer: read MNIST digits row by row, classify after the last row.

    python examples/v1/mnist_rnn.py [--steps 3000] [--report-every 500]

v1 calls: MixedConvNN(..., input_depth=<sequence length>, recurrent=True),
addRecurrentLayer, and class weights as an extra array of every trainingStep /
get_error (compileOutputFunctions(use_class_weights=True)). Imports come from
elektronn2.legacy (v1: elektronn.net.convnet, elektronn.training.traindata).
"""
import argparse

import numpy as np

from elektronn2.legacy import MixedConvNN, MNISTData

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--steps', type=int, default=3000, help='training steps')
parser.add_argument('--report-every', type=int, default=500, help='steps between reports')
args = parser.parse_args()

data = MNISTData(path=None, convert2image=True, shift_augment=False)
rows = 28                                        # time steps: the rows of an image
class_weights = np.ones(10, dtype=np.float32)    # all classes equally important

rnn = MixedConvNN((28,), input_depth=rows, recurrent=True)   # (batch, time, features)
rnn.addRecurrentLayer(n_hid=64, activation_func='tanh')
rnn.addPerceptronLayer(10, activation_func='linear')
rnn.compileOutputFunctions(target='nll', use_class_weights=True)
rnn.setOptimizerParams(Adam={'LR': 2e-3}, weight_decay=0)


def sequences(images):
    """(batch, 1, 28, 28) images -> (batch, 28 rows, 28 pixels)."""
    return images.reshape(len(images), rows, 28)


for i in range(args.steps):
    d, labels = data.getbatch(100)
    loss, _, _ = rnn.trainingStep(sequences(d), labels, class_weights, mode='Adam')
    if i % args.report_every == 0:
        valid_loss, valid_error, _ = rnn.get_error(sequences(data.valid_d), data.valid_l,
                                                   class_weights)
        print(f"update: {i}; loss {loss:.4f}, validation error {valid_error * 100:.2f} %")

loss, error, _ = rnn.get_error(sequences(data.test_d), data.test_l, class_weights)
print(f"Test loss: {loss:.4f}, test error: {error * 100:.2f} %")
