"""ELEKTRONN v1's helpers around a MixedConvNN: Gabor filters as first-layer weights,
example weights, a network rebuilt from its parameter file, introspection plots.

    python examples/v1/mnist_gabor.py [--steps 2000] [--out DIR]

v1 calls: makeGabor (elektronn.net.gaborfilters), addConvLayer(..., W=...),
compileOutputFunctions(use_example_weights=True), saveParameters and
createNetfromParams (elektronn.net.netcreation), plotFilters, showParamHistogram and
showActivations (elektronn.net.introspection); here all from elektronn2.legacy.
The network is convolutional to the end (1 x 1 outputs), so labels are (batch, 1, 1).
"""
import argparse
import os

import numpy as np

from elektronn2.legacy import (
    MixedConvNN,
    MNISTData,
    createNetfromParams,
    makeGabor,
    plotFilters,
    showActivations,
    showParamHistogram,
)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--steps', type=int, default=2000, help='training steps')
parser.add_argument('--out', default='.', help='directory for the parameter file and plots')
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)

data = MNISTData(path=None, convert2image=True, shift_augment=False)

# 12 first-layer filters: stripes in 6 directions, 1 and 2 periods
gabors = [makeGabor(angle, modes, 5, 0) for angle in range(0, 180, 30) for modes in (1, 2)]
W = np.stack(gabors)[:, None]   # (filters, input channels, x, y)

cnn = MixedConvNN((28, 28), input_depth=1)
cnn.addConvLayer(12, 5, pool_shape=2, activation_func='relu', W=W)   # -> 12 x 12
cnn.addConvLayer(16, 5, pool_shape=2, activation_func='relu')        # -> 4 x 4
cnn.addConvLayer(10, 4, pool_shape=1, activation_func='linear', is_last_layer=True)  # 1 x 1
cnn.compileOutputFunctions(target='nll', use_example_weights=True)
cnn.setOptimizerParams(SGD={'LR': 0.02, 'momentum': 0.9}, weight_decay=1e-4)

for i in range(args.steps):
    d, labels = data.getbatch(100)
    labels = labels[:, None, None]                              # one label per 1 x 1 output
    weights = np.where(labels == 8, 2.0, 1.0).astype(np.float32)   # eights count double
    loss, _, _ = cnn.trainingStep(d, labels, weights, mode='SGD')
    if i % 500 == 0:
        print(f"update: {i}; training loss {loss:.4f}")

param_file = os.path.join(args.out, 'gabor-cnn.param')
cnn.saveParameters(param_file)

# the same network again, from the parameter file alone (poolings are recorded in it)
net = createNetfromParams(param_file, patch_size=(28, 28), batch_size=None,
                          activation_func=['relu', 'relu', 'linear'])
test_l = data.test_l[:, None, None]
loss, error, _ = net.get_error(data.test_d, test_l)
print(f"Rebuilt network: test loss: {loss:.4f}, test error: {error * 100:.2f} %")

plotFilters(net, layer=0, savename=os.path.join(args.out, 'filters_layer0.png'))
showParamHistogram(net, savename=os.path.join(args.out, 'param_histograms.png'))
maps = showActivations(net, data.test_d[:1], out_dir=args.out)
print(f"Activation images: {[m.shape for m in maps]}")
