"""ELEKTRONN2 drop-in, neuromancer part: every public name at its original module path (and
in ``nm`` where ELEKTRONN2 exported it), with values checked against hand-computed ones,
and every new node class saved and restored through a model file."""
import copy
import importlib

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch
import torch.nn.functional as F

import elektronn2.neuromancer as nm
from elektronn2.config import config
from elektronn2.errors import ConfigError, GraphError, ShapeError
from elektronn2.neuromancer import computations as C
from elektronn2.neuromancer import graphmanager, graphutils, node_basic, variables
from elektronn2.neuromancer.graph_compile import GraphFunction
from elektronn2.neuromancer.malis import malis_pair_counts
from elektronn2.neuromancer.registry import NODE_CLASSES

API = {  # ELEKTRONN2 module -> its public names (reference/elektronn2_api.txt)
    'computations': 'apply_except_axis apply_activation softmax dot upconv conv maxout pooling '
                    'fragmentpool fragments2dense upsampling_nd upsampling unpooling_nd unpooling',
    'graphmanager': 'NodePointer ParamPointer SplitDescriptor NodeDescriptor GraphManager',
    'graphutils': 'TaggedShape make_func getinput_for_multioutput as_floatX',
    'variables': 'VariableParam VariableWeight ConstantParam initweights',
    'loss': 'Softmax OneHot MultinoulliNLL BlockedMultinoulliNLL MalisNLL Classification Errors '
            'GaussianNLL BetaNLL BinaryNLL SquaredLoss EuclideanDistance RampLoss AbsLoss '
            'AggregateLoss SobelizedLoss',
    'model': 'Model modelload inject_source inject_source_split rebuild_rnn rebuild_decoder '
             'rebuild_model kernel_lists_from_node_descr params_from_model_file simple_cnn',
    'neural': 'NeuralLayer Perceptron Conv FragmentsToDense UpConv Crop Pad AutoMerge Pool '
              'FaithlessMerge GRU LSTM LRN',
    'node_basic': 'ModelContainer choose_name MetaNode Node Input Input_like GenericInput '
                  'FromTensor split Concat Add MultMerge ApplyFunc ValueNode InitialState_like',
    'optimiser': 'Optimiser SGD AdaGrad AdaDelta Adam CG',
    'various': 'GaussianRV GaussianAEVBPrior StereographicMap SkelPrior SkelLossOP SkelLossN '
               'SkelLoss SkelLossRecOP SkelLossRec SkelGridUpdateOP SkelGridUpdateN '
               'skelgridupdate_split SkelGridUpdate SkelGetBatchOP SkelGetBatchN '
               'skelgetbatch_split SkelGetBatch ScanN scansplit Scan Reshape',
}
NM_EXPORTS = ('Node Input Input_like Concat ApplyFunc FromTensor split MultMerge InitialState_like '
              'Add GenericInput ValueNode Perceptron Conv UpConv Crop LSTM FragmentsToDense Pool '
              'Dot FaithlessMerge GRU LRN AutoMerge UpConvMerge Pad GaussianRV SkelLoss SkelPrior '
              'Scan SkelGetBatch SkelLossRec Reshape SkelGridUpdate GaussianNLL BinaryNLL '
              'AggregateLoss SquaredLoss AbsLoss Softmax MultinoulliNLL MalisNLL Errors BetaNLL '
              'SobelizedLoss BlockedMultinoulliNLL OneHot EuclideanDistance RampLoss VariableParam '
              'VariableWeight ConstantParam initweights model model_manager')
NEW_NODES = ('GenericInput', 'FromTensor', 'Classification', 'BlockedMultinoulliNLL', 'MalisNLL',
             'BetaNLL', 'EuclideanDistance', 'RampLoss', 'GaussianAEVBPrior', 'FaithlessMerge',
             'StereographicMap', 'SkelPrior')


def roundtrip(node, inputs, tmp_path, input_node=None, rtol=1e-6):
    """Save the node's model, load it, and compare the node's output on ``inputs``."""
    model = node.model
    model.designate_nodes(input_node=input_node or node.input_nodes[0], prediction_node=node)
    loaded = nm.modelload(model.save(tmp_path / f"{node.name}.mdl"))
    assert type(loaded[node.name]) is type(node)
    np.testing.assert_allclose(loaded[node.name](*inputs), node(*inputs), rtol=rtol, atol=1e-6)
    return loaded


def softmax_np(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# --- names -----------------------------------------------------------------------------------
@pytest.mark.parametrize('module', sorted(API))
def test_every_name_resolves_at_its_elektronn2_path(module):
    mod = importlib.import_module(f"elektronn2.neuromancer.{module}")
    missing = [n for n in API[module].split() if not hasattr(mod, n)]
    assert not missing


def test_nm_exports_and_registered_node_classes():
    assert not [n for n in NM_EXPORTS.split() if not hasattr(nm, n)]
    assert not [n for n in NEW_NODES if n not in NODE_CLASSES]
    assert nm.various.ScanN is nm.Scan and nm.neural.GRU is nm.GRU and nm.neural.Pad is nm.Pad
    assert graphmanager.GraphManager is nm.Model and node_basic.ModelContainer is type(nm.model_manager)


def test_unavailable_names_raise_naming_the_replacement():
    with pytest.raises(GraphError, match='skeleton tracing'):
        nm.various.SkelLossOP()
    with pytest.raises(GraphError, match='skeleton tracing'):
        nm.SkelLoss(None, {})
    with pytest.raises(GraphError, match='Node.__init_subclass__'):
        node_basic.MetaNode('X', (), {})
    with pytest.raises(ConfigError, match='LBFGS'):
        nm.optimiser.CG()


# --- computations -----------------------------------------------------------------------------
def test_computations_elementwise_dot_softmax():
    x = torch.randn(2, 6, 3, 4)
    np.testing.assert_allclose(C.apply_except_axis(x, 1, torch.mean), x.mean((0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(C.apply_except_axis(x, 1, torch.max), x.amax((0, 2, 3)))
    np.testing.assert_allclose(C.apply_activation(x, 'relu'), x.clamp(min=0))
    np.testing.assert_allclose(C.apply_activation(x, 'maxout 2'), C.maxout(x, 2))
    np.testing.assert_allclose(C.maxout(x, 3)[:, 1], x[:, 3:6].amax(1))
    slopes = torch.full((6,), 0.1)
    np.testing.assert_allclose(C.apply_activation(x, 'prelu', slopes), torch.where(x > 0, x, 0.1 * x))
    np.testing.assert_allclose(C.softmax(x, axis=1).sum(1), np.ones((2, 3, 4)), rtol=1e-6)
    w = torch.randn(6, 5)
    np.testing.assert_allclose(C.dot(x, w, axis=1), np.einsum('bfxy,fg->bgxy', x, w), rtol=1e-4, atol=1e-5)


def test_computations_conv_upconv_pooling():
    x, w = torch.randn(2, 3, 7, 8), torch.randn(4, 3, 3, 3)
    np.testing.assert_allclose(C.conv(x, w), F.conv2d(x, w), rtol=1e-4, atol=1e-5)
    assert C.conv(x, w, border_mode='same').shape == (2, 4, 7, 8)
    assert C.conv(x, w, border_mode='full').shape == (2, 4, 9, 10)
    np.testing.assert_allclose(C.conv(x, w, stride=(2, 2)), F.conv2d(x, w, stride=2), rtol=1e-4, atol=1e-5)
    x3, w3 = torch.randn(1, 4, 2, 5, 5), torch.randn(3, 2, 2, 2, 2)  # theano order (b, z, f, x, y)
    expected = F.conv3d(x3.transpose(1, 2), w3.transpose(1, 2)).transpose(1, 2)
    np.testing.assert_allclose(C.conv(x3, w3, axis_order='theano'), expected, rtol=1e-4, atol=1e-5)
    wt = torch.randn(3, 2, 2, 2)
    np.testing.assert_allclose(C.upconv(x, wt, (2, 2)), F.conv_transpose2d(x, wt, stride=2), rtol=1e-5)
    np.testing.assert_allclose(C.pooling(x[..., :6], (2, 3), [2, 3]), F.max_pool2d(x[..., :6], (2, 3)))
    theano = torch.randn(1, 4, 2, 6, 6)  # spatial axes 1, 3, 4
    expected = F.avg_pool3d(theano.transpose(1, 2), 2).transpose(1, 2)
    np.testing.assert_allclose(C.pooling(theano, (2, 2, 2), [1, 3, 4], mode='average'), expected, rtol=1e-6)


def test_computations_fragments_give_dense_max_pooling():
    x = torch.randn(1, 2, 9, 7)
    frags, offsets, strides = C.fragmentpool(x, (2, 2), [[0, 0]], [1, 1], [2, 3])
    assert frags.shape == (4, 2, 4, 3) and strides.tolist() == [2, 2]
    assert offsets.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    dense = C.fragments2dense(frags, offsets, strides, [2, 3])
    np.testing.assert_allclose(dense, F.max_pool2d(x, 2, stride=1)[..., :8, :6])


def test_computations_upsampling_unpooling():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(C.upsampling(x, 2, [2, 3])[0, 0, 0], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(C.upsampling_nd(x, (1, 1, 2, 1))[0, 0, :, 0], [0, 0, 3, 3])
    out = C.unpooling(x, 3, [3])
    assert out.shape == (1, 1, 2, 11)
    np.testing.assert_array_equal(out[0, 0, 0], [0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0])
    assert C.unpooling_nd(x, (1, 1, 2, 2)).shape == (1, 1, 5, 7)


# --- graphutils, graphmanager, variables -------------------------------------------------------
def test_graphutils():
    sh = graphutils.TaggedShape((None, 3, 10), 'b,f,x', strides=2, fov=5)
    assert isinstance(sh, graphutils.TaggedShape)
    assert isinstance(nm.TaggedShape((1,), 'f'), graphutils.TaggedShape)
    assert sh.strides == (2,) and sh.fov == (5,)
    with pytest.raises(ShapeError, match='mfp_offsets'):
        graphutils.TaggedShape((1, 2), 'b,f', None, [[0]])
    assert graphutils.as_floatX([1, 2]).dtype == np.float32
    a, b = nm.Input((None, 2), 'b,f', name='a'), nm.Input((None, 2), 'b,f', name='b')
    s = nm.Add(a, nm.Perceptron(b, 2, activation_func='lin'))
    assert graphutils.getinput_for_multioutput([s]) == [a, b]
    f = graphutils.make_func([a, b], s)
    x, y = np.ones((3, 2), np.float32), np.zeros((3, 2), np.float32)
    np.testing.assert_allclose(f(x, y), s(x, y))
    assert f.last_exec_time > 0 and len(graphutils.make_func(None, [s, a])(x, y)) == 2
    with pytest.raises(ConfigError, match='updates'):
        graphutils.make_func([a], a, updates=[(1, 2)])


def test_graphmanager_descriptors_rebuild_in_another_model():
    inp = nm.Input((None, 3), 'b,f', name='x')
    dot = nm.Perceptron(inp, 2, activation_func='tanh', name='dot')
    descr = graphmanager.NodeDescriptor.of(dot)
    assert descr.args == [] and descr.kwargs['parent'] == graphmanager.NodePointer('x')
    assert graphmanager.ParamPointer('dot', 'w').resolve(dot.model) is dot.w
    other = nm.model_manager.create('gm_other')
    graphmanager.NodeDescriptor(((None, 3), 'b,f'), {'name': 'x'}, nm.Input, None).restore(None, other)
    rebuilt = descr.restore(dot.get_param_values(), other)
    x = np.random.rand(4, 3).astype(np.float32)
    np.testing.assert_allclose(rebuilt(x), dot(x), rtol=1e-6)
    parts = graphmanager.SplitDescriptor('dot', nm.split, (), {'n_out': 2}).restore(other)
    np.testing.assert_allclose(parts[1](x), dot(x)[:, 1:], rtol=1e-6)


def test_variables():
    p = variables.VariableParam(np.arange(3.0), name='p', apply_reg=False)
    assert isinstance(p, torch.nn.Parameter) and p.apply_train and not p.apply_reg
    p.set_value(np.ones(3))
    np.testing.assert_array_equal(p.get_value(), [1, 1, 1])
    with pytest.raises(ShapeError):
        p.set_value(np.ones(4))
    c = variables.ConstantParam(np.zeros(2), name='c')
    assert not c.requires_grad
    with pytest.raises(GraphError, match='constant'):
        c.set_value(1)
    assert copy.deepcopy(c).param_name == 'c' and not copy.deepcopy(c).requires_grad
    filled = variables.VariableWeight(shape=(2, 3), value=0.5, name='w')
    np.testing.assert_array_equal(filled.get_value(), np.full((2, 3), 0.5))
    w = variables.initweights((200, 300))  # glorot normal: std sqrt(2 / (n_in + n_out))
    assert abs(w.std() - np.sqrt(2 / 500)) < 0.002
    conv = variables.initweights((64, 32, 3, 3), mode='uni', pool=(2, 2), spatial_axes=(2, 3))
    bound = np.sqrt(2 / ((32 + 64 / 4) * 9))
    assert np.abs(conv).max() <= bound and np.abs(conv).max() > 0.9 * bound
    np.testing.assert_allclose(variables.initweights((3, 2), scale=0.2, mode='prelu'), [[0.2, 1]] * 3)
    ortho = variables.initweights((4, 16), mode='ortho')
    gram = ortho @ ortho.T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-5)
    with pytest.raises(ConfigError, match='initialisation'):
        variables.initweights((2, 2), mode='bogus')


# --- node_basic ----------------------------------------------------------------------------------
def test_choose_name_counts_up_trailing_numbers():
    assert nm.node_basic.choose_name('conv', []) == 'conv'
    assert nm.node_basic.choose_name('conv', ['conv']) == 'conv1'
    assert nm.node_basic.choose_name('conv1', ['conv1', 'conv2']) == 'conv3'


def test_input_like_hardcoded_shape_and_tagged_shape_reference():
    ref = nm.Input((2, 3), 'b,f', name='ref')
    loose = nm.Input_like(ref, name='loose')
    strict = nm.Input_like(ref, name='strict', hardcoded_shape=True)
    assert loose.to_tensor(np.zeros((5, 3))).shape == (5, 3)
    with pytest.raises(ShapeError, match="axis 'b'"):
        strict.to_tensor(np.zeros((5, 3)))
    plain = nm.Input_like(nm.TaggedShape((None, 4, 6), 'b,f,x'), dtype='int16', override_f=1, name='lab')
    assert type(plain) is nm.Input and plain.shape.shape == (None, 1, 6) and plain.dtype == 'int16'


class ScaledByObject(nm.Node):
    """Test node: its parent times ``obj['scale']`` of a GenericInput."""

    def __init__(self, parent, source, name='scaled', print_repr=False):
        super().__init__([parent, source], name, print_repr)

    def forward(self, x, obj, training=False):
        return x * obj['scale']


def test_generic_input_feeds_any_object(tmp_path):
    x = nm.Input((None, 2), 'b,f', name='x')
    src = nm.GenericInput(name='settings')
    assert src.is_input and src.shape.shape == ()
    out = ScaledByObject(x, src)
    np.testing.assert_allclose(out(np.ones((2, 2)), {'scale': 3.0}), np.full((2, 2), 3.0))
    out.model.designate_nodes(input_node=x, prediction_node=out)
    loaded = nm.modelload(out.model.save(tmp_path / 'g.mdl'))
    assert type(loaded['settings']) is nm.GenericInput
    np.testing.assert_allclose(loaded.predict(np.ones((1, 2)), {'scale': -1}), [[-1, -1]])


def test_from_tensor_index_or_function(tmp_path):
    x = nm.Input((None, 4, 5), 'b,f,x', name='x')
    part = nm.FromTensor((slice(None), slice(1, 3)), nm.TaggedShape((None, 2, 5), 'b,f,x'), x)
    sig = nm.FromTensor('torch.sigmoid', x.shape, x, name='sig')
    v = np.random.randn(2, 4, 5).astype(np.float32)
    np.testing.assert_allclose(part(v), v[:, 1:3])
    np.testing.assert_allclose(sig(v), 1 / (1 + np.exp(-v)), rtol=1e-6)
    with pytest.raises(ShapeError, match='declared'):
        nm.FromTensor((slice(None), 0), x.shape, x)
    roundtrip(part, [v], tmp_path, input_node=x)
    roundtrip(sig, [v], tmp_path, input_node=x)


def test_split_with_a_name_per_part():
    x = nm.Input((None, 6), 'b,f', name='x')
    a, b, c = nm.split(x, 'f', n_out=3, name=['first', 'second', 'third'])
    assert (a.name, b.name, c.name) == ('first', 'second', 'third')
    flat = nm.Reshape(x, nm.TaggedShape((None, 2, 3), 'b,f,x'))
    assert flat.shape.tags == ('b', 'f', 'x') and flat(np.arange(12.0).reshape(2, 6)).shape == (2, 2, 3)
    with pytest.raises(ShapeError, match='3 parts'):
        nm.split(x, 'f', n_out=3, name=['one', 'two'])


def test_value_node_and_initial_state_init_kwargs(tmp_path):
    v = nm.ValueNode((2, 3), 'b,f', apply_train=True, init_kwargs=dict(mode='const', scale=0.25))
    assert v.name == 'value_state' and v.params['value'].requires_grad
    np.testing.assert_array_equal(v.get_value(), np.full((2, 3), 0.25))
    const = nm.ValueNode((3,), 'f', value=[np.arange(3.0), 'const'], apply_train=True, name='c')
    assert not const.params['value'].requires_grad
    inp = nm.Input((None, 4, 7), 'b,f,x', name='x')
    state = nm.InitialState_like(inp, 2, init_kwargs=dict(mode='const', scale=0.5))
    assert state.shape.shape == (None, 2, 7) and state.shape.tags == ('b', 'f', 'x')
    np.testing.assert_array_equal(state(np.zeros((3, 4, 7))), np.full((3, 2, 7), 0.5))
    x = nm.Input((2, 3), 'b,f', name='v_in')
    total = nm.Add(x, v, name='total')
    roundtrip(state, [np.zeros((1, 4, 7))], tmp_path, input_node=inp)
    nm.model_manager.setmodel(total.model)
    roundtrip(total, [np.ones((2, 3), np.float32)], tmp_path, input_node=x)


# --- losses ------------------------------------------------------------------------------------------
def class_net(n_class=3, n_indep=1, n_pos=4):
    logits = nm.Input((None, n_class * n_indep, n_pos), 'b,f,x', name='logits')
    probs = nm.Softmax(logits, n_class=n_class, n_indep=n_indep)
    labels = nm.Input((None, n_indep, n_pos), 'b,f,x', dtype='int64', name='labels')
    return logits, probs, labels


def test_multinoulli_weakness_smooths_labels():
    logits, probs, labels = class_net()
    nll = nm.MultinoulliNLL(probs, labels, target_is_sparse=True, weakness=0.3)
    z, y = np.random.randn(2, 3, 4).astype(np.float32), np.random.randint(0, 3, (2, 1, 4))
    p = softmax_np(z, 1)
    t = 0.7 * (np.arange(3)[None, :, None] == y) + 0.3 / 3
    np.testing.assert_allclose(nll(z, y), -(t * np.log(p)).sum(1, keepdims=True), rtol=1e-5)
    with pytest.raises(ConfigError, match='weakness'):
        nm.MultinoulliNLL(probs, labels, weakness=1.0)


def test_blocked_multinoulli_nll(tmp_path):
    logits, probs, labels = class_net(n_class=3, n_indep=2)
    nll = nm.BlockedMultinoulliNLL(probs, labels, blocking_factor=0.5, target_is_sparse=True)
    assert nll.shape.shape == (None, 1, 4)
    z, y = np.random.randn(2, 6, 4).astype(np.float32), np.random.randint(0, 3, (2, 2, 4))
    p = softmax_np(z.reshape(2, 2, 3, 4), 2)
    blocked = p.copy()
    blocked[:, :, 1:] = np.maximum(p[:, :, 1:], 0.5 * p[:, :, 1:].max(2, keepdims=True))
    picked = np.take_along_axis(blocked, y[:, :, None], 2)[:, :, 0]  # (b, n_indep, x)
    expected = -np.log(picked).sum(1, keepdims=True) / 2  # normalised per group
    np.testing.assert_allclose(nll(z, y), expected, rtol=1e-5)
    plain = nm.MultinoulliNLL(probs, labels, target_is_sparse=True)
    assert np.all(nll(z, y) <= plain(z, y) + 1e-6)
    roundtrip(nll, [z, y], tmp_path, input_node=logits)


def test_malis_nll_counts_pairs_and_drives_edges(tmp_path):
    nhood = [[-1, 0], [0, -1]]
    ids = np.array([[1, 1, 0, 2], [1, 1, 0, 2], [3, 3, 3, 2]])
    aff_true = np.zeros((1, 2, 3, 4), np.float32)
    for k, (dz, dx) in enumerate(nhood):
        here = ids[max(0, -dz):, max(0, -dx):]
        there = ids[:ids.shape[0] - max(0, -dz), :ids.shape[1] - max(0, -dx)]
        aff_true[0, k, max(0, -dz):, max(0, -dx):] = (here == there) & (here > 0)
    logits = nm.Input((1, 4, 3, 4), 'b,f,x,y', name='logits')
    probs = nm.Softmax(logits, n_class=2, n_indep=2)
    aff_gt = nm.Input((1, 2, 3, 4), 'b,f,x,y', name='aff')
    seg_gt = nm.Input((1, 1, 3, 4), 'b,f,x,y', dtype='int64', name='seg')
    malis = nm.MalisNLL(probs, aff_gt, seg_gt, nhood, unrestrict_neg=False, class_weights=[1.0, 2.0])
    assert malis.shape.shape == (1, 2, 3, 4)
    z = np.random.randn(1, 4, 3, 4).astype(np.float32)
    p = softmax_np(z.reshape(1, 2, 2, 3, 4), 2)
    connect = p[0, :, 1]
    pos = malis_pair_counts(np.minimum(connect, aff_true[0]), ids, nhood)[0]
    neg = malis_pair_counts(np.maximum(connect, aff_true[0]), ids, nhood)[1]
    nll = -(2.0 * pos * np.log(connect + 1e-6) + neg * np.log(p[0, :, 0] + 1e-6))
    out = malis(z, aff_true, ids[None, None])
    np.testing.assert_allclose(out[0], nll * nll.size / (pos + neg).sum(), rtol=1e-4)
    fn = malis.model.function([nm.AggregateLoss(malis)], training=True)
    tensors = fn.to_tensors(z, aff_true, ids[None, None])
    tensors[0].requires_grad_(True)
    fn(*tensors)[0].backward()
    grad_connect = tensors[0].grad[0, 1::2].numpy()
    assert np.all(grad_connect[pos > 0] < 0)  # positive pairs raise p(connected)
    roundtrip(malis, [z, aff_true, ids[None, None]], tmp_path, input_node=logits, rtol=1e-5)
    with pytest.raises(ConfigError, match='Softmax'):
        nm.MalisNLL(logits, aff_gt, seg_gt, nhood)


def test_classification_and_errors(tmp_path):
    logits, probs, labels = class_net(n_class=3, n_indep=2)
    cls = nm.Classification(probs)
    assert cls.shape.shape == (None, 2, 4)
    z = np.random.randn(2, 6, 4).astype(np.float32)
    expected = z.reshape(2, 2, 3, 4).argmax(2)
    np.testing.assert_array_equal(cls(z), expected)
    errors = nm.Errors(cls, labels, target_is_sparse=True)
    wrong = expected.copy()
    wrong[0, 0, :2] = (wrong[0, 0, :2] + 1) % 3
    np.testing.assert_allclose(errors(z, wrong), 2 / 16)
    x = nm.Input((None, 3), 'b,f', name='x')
    sig = nm.Perceptron(x, 2, activation_func='sigmoid', name='sig')
    binary = nm.Classification(sig)
    assert (binary.n_class, binary.n_indep, binary.shape.shape) == (2, 2, (None, 2))
    v = np.random.randn(5, 3).astype(np.float32)
    np.testing.assert_array_equal(binary(v), sig(v) > 0.5)
    roundtrip(cls, [z], tmp_path, input_node=logits)


def test_beta_nll(tmp_path):
    mode, conc, target = (nm.Input((None, 3), 'b,f', name=n) for n in ('mode', 'conc', 'target'))
    nll = nm.BetaNLL(mode, conc, target)
    m = np.random.uniform(0.1, 0.9, (2, 3)).astype(np.float32)
    c = np.random.uniform(3, 10, (2, 3)).astype(np.float32)
    t = np.random.uniform(0.05, 0.95, (2, 3)).astype(np.float32)
    a, b = m * (c - 2) + 1, (1 - m) * (c - 2) + 1
    expected = -scipy.stats.beta.logpdf(t, a, b) + np.log1p(np.exp(-c))
    np.testing.assert_allclose(nll(m, c, t), expected, rtol=5e-4)  # the node adds 1e-6 in the logs
    roundtrip(nll, [m, c, t], tmp_path, input_node=mode)


def test_euclidean_distance_and_ramp_loss(tmp_path):
    pred, target = nm.Input((None, 3, 2), 'b,f,x', name='pred'), nm.Input((None, 3, 2), 'b,f,x', name='t')
    dist = nm.EuclideanDistance(pred, target)
    p, t = np.random.randn(2, 3, 2).astype(np.float32), np.random.randn(2, 3, 2).astype(np.float32)
    t[0, :, 1] = np.nan
    expected = np.sqrt(((t - p) ** 2).sum(1, keepdims=True))
    expected[0, 0, 1] = 0
    np.testing.assert_allclose(dist(p, t), expected, rtol=1e-5)
    ramp = nm.RampLoss(pred, target, margin=0.5)
    assert ramp.shape.shape == (None, 1, 2)
    np.testing.assert_allclose(ramp(p, np.nan_to_num(t)),
                               np.maximum(p - np.nan_to_num(t) + 0.5, 0).mean(1, keepdims=True), rtol=1e-5)
    roundtrip(dist, [p, t], tmp_path, input_node=pred)
    roundtrip(ramp, [p, np.nan_to_num(t)], tmp_path, input_node=pred)


def test_sobelized_loss_matches_scipy_gradients(tmp_path):
    pred = nm.Input((None, 2, 6, 7), 'b,f,x,y', name='pred')
    target = nm.Input((None, 2, 6, 7), 'b,f,x,y', name='t')
    loss = nm.SobelizedLoss(pred, target, loss_kwargs={'name': 'sobel_abs'})
    assert isinstance(loss, nm.AbsLoss) and loss.name == 'sobel_abs'
    assert not loss.model['pred_sobel'].w.requires_grad
    p, t = np.random.randn(1, 2, 6, 7), np.random.randn(1, 2, 6, 7)
    d, s = np.array([1.0, 0.0, -1.0]), np.array([0.3, 0.4, 0.3])
    grads = []
    for kernel in (np.outer(d, s), np.outer(s, d)):  # derivative along x, then along y
        for f in range(2):
            diff = p[0, f] - t[0, f]
            grads.append(scipy.ndimage.correlate(diff, kernel, mode='constant'))
    expected = np.abs(np.stack(grads)).mean(0)
    np.testing.assert_allclose(loss(p, t)[0, 0], expected, rtol=1e-4, atol=1e-5)
    roundtrip(loss, [p, t], tmp_path, input_node=pred, rtol=1e-5)


def test_gaussian_aevb_prior(tmp_path):
    mu, log_sig = nm.Input((None, 3), 'b,f', name='mu'), nm.Input((None, 3), 'b,f', name='ls')
    rv = nm.GaussianRV(mu, log_sig, n_samples=4)
    assert rv.name == 'state'
    prior = rv.make_priorlayer()
    assert isinstance(prior, nm.GaussianAEVBPrior) and prior.shape.shape == (None, 4, 3)
    m, ls = np.random.randn(2, 3).astype(np.float32), 0.3 * np.random.randn(2, 3).astype(np.float32)
    kl = 0.5 * (m ** 2 + np.exp(2 * ls) - 1 - 2 * ls)
    np.testing.assert_allclose(prior(m, ls), np.repeat(kl[:, None], 4, 1), rtol=1e-5)
    flat = nm.GaussianAEVBPrior(mu, log_sig)
    np.testing.assert_allclose(flat(m, ls), kl, rtol=1e-5)
    roundtrip(prior, [m, ls], tmp_path, input_node=mu)


# --- neural -----------------------------------------------------------------------------------------
def test_faithless_merge(tmp_path):
    hard, easy = nm.Input((None, 2, 3), 'b,f,x', name='hard'), nm.Input((None, 1, 3), 'b,f,x', name='easy')
    merged = nm.FaithlessMerge(hard, easy, failing_prob=1.0, hardeasy_ratio=0.0)
    assert merged.shape.shape == (None, 3, 3)
    h, e = np.ones((2, 2, 3), np.float32), np.ones((2, 1, 3), np.float32)
    np.testing.assert_array_equal(merged(h, e), np.ones((2, 3, 3)))  # inference: no failing
    train = merged.model.function([merged], training=True)
    out = train(*train.to_tensors(h, e))[0].numpy()
    np.testing.assert_array_equal(out[:, :2], 0)  # the hard features failed
    np.testing.assert_array_equal(out[:, 2:], 1)
    merged.params['hardeasy_ratio'].data.fill_(1.0)
    out = train(*train.to_tensors(h, e))[0].numpy()
    np.testing.assert_array_equal(out[:, :2], 1)
    np.testing.assert_array_equal(out[:, 2:], 0)
    roundtrip(merged, [h, e], tmp_path, input_node=hard)


def test_w_b_accessors_and_weight_sharing(tmp_path):
    inp = nm.Input((None, 2, 6, 6), 'b,f,x,y', name='x')
    first = nm.Conv(inp, 3, 3, activation_func='lin', name='first')
    assert first.w is first.params['w'] and first.b is first.params['b']
    shared = nm.Conv(inp, 3, 3, activation_func='lin', w=first.w, b=first, name='shared')
    assert shared.w is first.w and shared.b is first.b
    copied = nm.Conv(inp, 3, 3, activation_func='lin', w=first.w.detach().numpy() * 2, name='copied')
    assert copied.w is not first.w
    x = np.random.rand(1, 2, 6, 6).astype(np.float32)
    np.testing.assert_allclose(shared(x), first(x))
    with pytest.raises(ShapeError, match='shared w'):
        nm.Conv(inp, 4, 3, w=first.w)
    loaded = roundtrip(shared, [x], tmp_path, input_node=inp)
    assert loaded['shared'].w is loaded['first'].w


def test_conv_batch_normalisation_initial_values_and_invalidate_fov(tmp_path):
    inp = nm.Input((None, 2, 5, 5), 'b,f,x,y', name='x')
    gamma, mean = np.array([2.0, 0.5], np.float32), np.array([0.1, -0.2], np.float32)
    std = np.array([3.0, 1.5], np.float32)
    beta = np.array([1.0, -1.0], np.float32)
    conv = nm.Conv(inp, 2, 3, activation_func='lin', batch_normalisation='predict', b=beta,
                   gamma=gamma, mean=mean, std=[std, 'const'], invalidate_fov=True)
    assert conv.shape.fov == (-1, -1)
    plain = nm.Perceptron(inp, 2, gamma=gamma)  # ignored without batch normalisation, as before
    assert plain.gamma is None and plain._call_args['gamma'] is None
    np.testing.assert_allclose(conv.std, std, rtol=1e-6)
    assert conv.b is conv.params['beta']
    x = np.random.rand(1, 2, 5, 5).astype(np.float32)
    raw = F.conv2d(torch.from_numpy(x), conv.w.detach()).numpy()
    shape = (1, 2, 1, 1)
    expected = (raw - mean.reshape(shape)) / np.sqrt(std.reshape(shape) ** 2 + 1e-5) * gamma.reshape(shape) \
        + beta.reshape(shape)
    np.testing.assert_allclose(conv(x), expected, rtol=1e-4, atol=1e-5)
    loaded = roundtrip(conv, [x], tmp_path, input_node=inp)
    assert loaded[conv.name].shape.fov == (-1, -1)


def test_upconv_takes_activation_fourth_and_recurrent_extras():
    inp = nm.Input((None, 2, 4, 4), 'b,f,x,y', name='x')
    up = nm.UpConv(nm.Pool(inp, 2), 2, 2, 'lin')
    assert up.activation_func == 'lin'
    np.testing.assert_array_equal(nm.Pad(inp, 1, 2.5)(np.zeros((1, 2, 4, 4)))[0, 0, 0], [2.5] * 6)
    seq = nm.Input((None, 3), 'b,f', name='s')
    h0 = nm.InitialState_like(seq, 4)
    gru = nm.GRU(seq, memory_state=h0, n_f=4)
    assert gru.w.shape == (3, 12) and gru.b.shape == (12,)
    with pytest.raises(ConfigError, match='dropout_rate'):
        nm.LSTM(seq, nm.InitialState_like(seq, 8), 4, dropout_rate=0.5)


def test_scan_of_several_results_and_sequences(tmp_path):
    a, b = nm.Input((None, 5, 2), 'b,r,f', name='a'), nm.Input((None, 5, 2), 'b,r,f', name='b')
    a0 = nm.split(a, 'r', index=1, strip_singleton_dims=True)[0]
    b0 = nm.split(b, 'r', index=1, strip_singleton_dims=True)[0]
    h0 = nm.InitialState_like(a0, 2, name='h0')
    h = nm.Add(nm.Add(h0, a0), b0, name='h')  # running sum of a + b
    double = nm.ApplyFunc(h, 'torch.mul', args=(2.0,), name='double')
    total, twice = nm.Scan([h, double], in_memory=h0, out_memory=h, in_iterate=[a, b],
                           in_iterate_0=[a0, b0], unroll_scan=False)
    assert total.shape.shape == (None, 5, 2) and nm.various.scansplit((total, twice)) == [total, twice]
    x, y = np.random.randn(3, 5, 2).astype(np.float32), np.random.randn(3, 5, 2).astype(np.float32)
    np.testing.assert_allclose(total(x, y), np.cumsum(x + y, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(twice(x, y), 2 * np.cumsum(x + y, 1), rtol=1e-5, atol=1e-6)
    roundtrip(twice, [x, y], tmp_path, input_node=a)


# --- various ----------------------------------------------------------------------------------------
def test_stereographic_map_and_skel_prior(tmp_path):
    pred = nm.Input((None, 3), 'b,f', name='pred')
    stereo = nm.various.StereographicMap(pred)
    v = np.random.randn(4, 3).astype(np.float32)
    r, y, x = np.log1p(np.exp(v[:, 0])), v[:, 1], v[:, 2]
    q = 1 + x ** 2 + y ** 2
    expected = np.stack([r * (2 - q) / q, r * 2 * y / q, r * 2 * x / q], 1)
    np.testing.assert_allclose(stereo(v), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(stereo(v), axis=1), r, rtol=1e-5)
    prior = nm.SkelPrior(pred, target_length=4.0, prior_n=1.0, prior_posz=0.5, prior_z=0.25, prior_xy=2.0)
    z = v[:, :1]
    norm = np.linalg.norm(v * [2, 1, 1], axis=1, keepdims=True)
    expected = (np.maximum(np.abs(norm - 4) - 0.75, 0) + 0.5 * np.log1p(np.exp(-z)) + 0.25 * np.abs(2 - z)
                + 2 * np.linalg.norm(v[:, 1:], axis=1, keepdims=True))
    np.testing.assert_allclose(prior(v), expected, rtol=1e-5)
    roundtrip(stereo, [v], tmp_path, input_node=pred)
    roundtrip(prior, [v], tmp_path, input_node=pred)


# --- optimiser ----------------------------------------------------------------------------------------
def regression_net():
    x = nm.Input((None, 3), 'b,f', name='x')
    t = nm.Input((None, 1), 'b,f', name='t')
    pred = nm.Perceptron(x, 1, activation_func='lin', name='pred')
    loss = nm.AggregateLoss(nm.SquaredLoss(pred, t))
    return x, t, pred, loss


def test_sgd_step_is_a_gradient_step(monkeypatch):
    monkeypatch.setattr(config, 'precision', 'fp32')  # exact values (updates may run in bf16)
    x, t, pred, loss = regression_net()
    opt = nm.optimiser.SGD([x, t], loss, None, None, [], additional_outputs=[pred])
    opt.set_opt_meta_params({'lr': 0.1, 'mom': 0.0})
    assert opt.meta_params['lr'] == 0.1 and loss.model.lr == 0.1
    xv, tv = np.random.randn(8, 3).astype(np.float32), np.random.randn(8, 1).astype(np.float32)
    w, b = pred.w.detach().numpy().copy(), pred.b.detach().numpy().copy()
    residual = tv - (xv @ w + b)
    loss_value, prediction = opt(xv, tv)
    np.testing.assert_allclose(loss_value, (0.5 * residual ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(prediction, xv @ w + b, rtol=1e-5)
    np.testing.assert_allclose(pred.w.detach().numpy(), w + 0.1 * xv.T @ residual / 8, rtol=1e-4)
    np.testing.assert_allclose(pred.b.detach().numpy(), b + 0.1 * residual.mean(0), rtol=1e-4)
    assert opt.last_exec_time > 0


def test_adam_and_friends_reduce_the_loss_of_their_params_only():
    x, t, pred, loss = regression_net()
    xv = np.random.randn(16, 3).astype(np.float32)
    tv = (xv @ np.array([[1.0], [-2.0], [0.5]])).astype(np.float32)
    b_before = pred.b.detach().clone()
    opt = nm.optimiser.Adam(None, loss, None, [pred.w], [])
    opt.setlr(0.05)
    first = opt(xv, tv)[0]
    for _ in range(20):
        last = opt(xv, tv)[0]
    assert last < 0.5 * first and torch.equal(pred.b.detach(), b_before)
    for cls in (nm.optimiser.AdaGrad, nm.optimiser.AdaDelta):
        assert cls(None, loss, None, None, [])(xv, tv)[0] > 0
    with pytest.raises(ConfigError, match='extra_updates'):
        nm.optimiser.SGD(None, loss, None, None, [(1, 2)])
    with pytest.raises(ConfigError, match='autograd'):
        nm.optimiser.SGD(None, loss, ['grad'], None, [])


# --- model ---------------------------------------------------------------------------------------------
def test_modelload_and_rebuild_model_take_elektronn2_argument_order(tmp_path):
    inp = nm.Input((None, 1, 9, 9), 'b,f,x,y', name='x')
    conv = nm.Conv(inp, 2, 2, 2, activation_func='lin')
    conv.model.designate_nodes(input_node=inp, prediction_node=conv)
    path = conv.model.save(tmp_path / 'm.mdl')
    dense = nm.model.modelload(path, True, (10, 10))  # override_mfp_to_active, imposed_patch_size
    assert 'to_dense' in dense.nodes and dense.input_node.shape.spatial_shape == (10, 10)
    rebuilt = nm.model.rebuild_model(conv.model, False, (11, 11), 'rebuilt')
    assert rebuilt.name.startswith('rebuilt') and rebuilt.input_node.shape.spatial_shape == (11, 11)
    params = nm.model.params_from_model_file(path)
    np.testing.assert_array_equal(params['conv']['w'], conv.get_param_values()['w'])
    graph, _ = conv.model.serialise()
    assert nm.model.kernel_lists_from_node_descr(graph) == ([2], [2], [False])


def test_inject_source_and_rebuild_decoder():
    inp = nm.Input((None, 4), 'b,f', name='x')
    code = nm.Perceptron(inp, 2, activation_func='tanh', name='code')
    dec = nm.Perceptron(code, 4, activation_func='lin', name='dec')
    model = inp.model
    model.designate_nodes(input_node=inp, prediction_node=dec)
    graph, _ = model.serialise()
    edited, name = nm.model.inject_source(graph, 'dec', (None, 2), 'b,f', name='x')
    assert name == 'x1' and edited['nodes'][2]['class'] == 'Input'
    assert edited['nodes'][3]['args']['parent'] == {'__node__': 'x1'}
    left, right = nm.split(inp, 'f', n_out=2)
    graph, _ = model.serialise()
    edited, name = nm.model.inject_source_split(graph, left.name, (None, 4), 'b,f', name='fresh')
    parents = {d['args']['name']: d['args']['parent'] for d in edited['nodes'] if d['class'] == 'Split'}
    assert parents == {left.name: {'__node__': 'fresh'}, right.name: {'__node__': 'fresh'}}
    decoder = nm.model.rebuild_decoder(model, 'code', 'dec')
    assert decoder.input_node.name == 'state_input' and decoder.input_node.shape.shape == (None, 2)
    z = np.random.randn(3, 2).astype(np.float32)
    p = dec.get_param_values()
    np.testing.assert_allclose(decoder.predict(z), z @ p['w'] + p['b'], rtol=1e-5)


def test_rebuild_rnn_feeds_the_memory():
    img = nm.Input((1, 1, 4, 4), 'b,f,x,y', name='raw')
    conv = nm.Conv(img, 2, 3, name='conv')
    flat = nm.Reshape(conv, (1, 8), 'b,f')
    mem = nm.ValueNode((1, 3), 'b,f', name='mem_hid', apply_train=True)
    gru = nm.GRU(flat, mem, 3, name='gru')
    model = img.model
    model.designate_nodes(input_node=img, prediction_node=gru)
    rnn = nm.model.rebuild_rnn(model)
    assert [n.name for n in rnn.ordered_inputs([rnn['gru']])] == ['img', 'mem_hid_feedback']
    x, h = np.random.rand(1, 1, 4, 4).astype(np.float32), np.random.rand(1, 3).astype(np.float32)
    direct = GraphFunction([gru], [img, mem], training=False).numpy(x, h)[0]
    np.testing.assert_allclose(rnn.predict(x, h), direct, rtol=1e-5)


def test_simple_cnn_snaps_the_input_and_trains():
    model = nm.model.simple_cnn(2, 1, 3, (15, 15), [3, 3], [4, 4], 'relu', [2, 1], name='simple')
    assert model is nm.model_manager.current and model.name.startswith('simple')
    assert model.input_node.shape.shape == (2, 1, 14, 14)  # 15 - 2 is odd: 14 is the nearest
    assert model['class_probabilities'].shape.shape == (2, 3, 4, 4)
    x = np.random.rand(2, 1, 14, 14).astype(np.float32)
    y = np.random.randint(0, 3, (2, 1, 4, 4))
    loss, _, _ = model.trainingstep(x, y, optimiser='SGD')
    assert np.isfinite(loss) and len(model.predict_ext(x, y)) == 3
