"""ELEKTRONN v1's standalone style: build a CNN with MixedConvNN, train it in a plain loop.

    python examples/v1/mnist_cnn.py [--steps 5000] [--report-every 100]

The calls are v1's, unchanged: 'abs' units in every layer, the last one included (the
softmax of an 'nll' net acts on the last layer's values before the activation, as in
v1). v1 imported MNISTData from elektronn.training.traindata and MixedConvNN from
elektronn.net.convnet; here both come from elektronn2.legacy, and print is Python 3's.
"""
import argparse

from elektronn2.legacy import MixedConvNN, MNISTData

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--steps', type=int, default=5000, help='training steps')
parser.add_argument('--report-every', type=int, default=100, help='steps between reports')
args = parser.parse_args()

# path=None: the MNIST files of $ELEKTRONN2_DATA/mnist; 28 x 28 images, no augmentation
data = MNISTData(path=None, convert2image=True, shift_augment=False)

batch_size = 100
cnn = MixedConvNN((28, 28), input_depth=1)   # one grey channel
cnn.addConvLayer(10, 5, pool_shape=2, activation_func='abs')   # (nof, filter size)
cnn.addConvLayer(8, 5, pool_shape=2, activation_func='abs')
cnn.addPerceptronLayer(100, activation_func='abs')
cnn.addPerceptronLayer(80, activation_func='abs')
cnn.addPerceptronLayer(10, activation_func='abs')   # one output per class
cnn.compileOutputFunctions()                         # 'nll': softmax + cross-entropy
cnn.setOptimizerParams(SGD={'LR': 1e-2, 'momentum': 0.9}, weight_decay=0)

for i in range(args.steps):
    d, labels = data.getbatch(batch_size)
    loss, loss_instance, time_per_step = cnn.trainingStep(d, labels, mode='SGD')
    if i % args.report_every == 0:
        valid_loss, valid_error, valid_predictions = cnn.get_error(data.valid_d, data.valid_l)
        print(f"update: {i}; validation loss: {valid_loss:.4f}, validation error: "
              f"{valid_error * 100:.2f} %")

loss, error, test_predictions = cnn.get_error(data.test_d, data.test_l)
print(f"Test loss: {loss:.4f}, test error: {error * 100:.2f} %")
