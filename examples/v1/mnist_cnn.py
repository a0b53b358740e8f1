"""ELEKTRONN v1's standalone style: build a CNN with MixedConvNN, train it in a plain loop.

    python examples/v1/mnist_cnn.py [--steps 3000]

A v1 script like this one runs after two edits: MixedConvNN and MNISTData are imported
from elektronn2.legacy, and print is Python 3's function.
"""
import argparse

from elektronn2.legacy import MixedConvNN, MNISTData

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--steps', type=int, default=3000, help='training steps')
parser.add_argument('--report-every', type=int, default=500, help='steps between reports')
args = parser.parse_args()

data = MNISTData(path=None, convert2image=True, shift_augment=False)  # 28 x 28 images
batch_size = 100

cnn = MixedConvNN((28, 28), input_depth=1)   # one grey channel
cnn.addConvLayer(16, 5, pool_shape=2, activation_func='relu')   # -> 16 x 12 x 12
cnn.addConvLayer(32, 3, pool_shape=2, activation_func='relu')   # -> 32 x 5 x 5
cnn.addPerceptronLayer(120, activation_func='relu')
cnn.addPerceptronLayer(10, activation_func='linear')            # one output per class
cnn.compileOutputFunctions(target='nll')                        # softmax + cross-entropy
cnn.setOptimizerParams(SGD={'LR': 0.02, 'momentum': 0.9}, weight_decay=1e-4)
print(cnn.model.summary())

for i in range(args.steps):
    d, labels = data.getbatch(batch_size)
    loss, loss_instance, time_per_step = cnn.trainingStep(d, labels, mode='SGD')
    if i % args.report_every == 0:
        valid_loss, valid_error, _ = cnn.get_error(data.valid_d, data.valid_l)
        print(f"step {i}: training loss {loss:.4f}, validation loss {valid_loss:.4f}, "
              f"validation error {valid_error:.2%}")

test_loss, test_error, predictions = cnn.get_error(data.test_d, data.test_l)
print(f"Test loss {test_loss:.4f}, test error {test_error:.2%}")
