"""Execution settings: the rules for 'auto', overrides, validation, experiment keys."""
import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.config import config
from elektronn2.errors import ConfigError
from elektronn2.neuromancer import execution
from elektronn2.training.experiment import ExperimentConfig

CPU = torch.device('cpu')


def test_auto_on_cpu_uses_bf16_only_for_training_steps_where_native():
    native = execution.has_native_bf16(CPU)
    update = execution.resolve(CPU, update=True)
    plain = execution.resolve(CPU)
    assert update.precision == ('bf16' if native else 'fp32')
    assert plain.precision == 'fp32' and plain.autocast_dtype is None
    assert update.memory_format == plain.memory_format == 'channels_last'
    assert not update.compile and not update.grad_scaling


def test_fixed_settings_override_auto(restore_config):
    config.precision, config.memory_format, config.compile = 'fp16', 'contiguous', 'on'
    settings = execution.resolve(CPU)
    assert settings == execution.ExecutionSettings(CPU, 'fp16', 'contiguous', True)
    assert settings.grad_scaling and settings.autocast_dtype == torch.float16
    config.precision, config.memory_format = 'fp32', 'auto'
    config.float_dtype = 'float64'      # oneDNN has no fast float64 convolutions
    assert execution.resolve(CPU, update=True).memory_format == 'contiguous'


def test_invalid_values_name_the_setting():
    with pytest.raises(ConfigError, match="memory_format='nhwc' is invalid"):
        config.memory_format = 'nhwc'
    with pytest.raises(ConfigError, match="precision='half'"):
        config.precision = 'half'


def test_to_layout_changes_strides_only():
    settings = execution.ExecutionSettings(CPU, 'fp32', 'channels_last', False)
    x = torch.rand(2, 3, 4, 5, 6)
    y = settings.to_layout(x)
    assert y.is_contiguous(memory_format=torch.channels_last_3d) and torch.equal(x, y)
    assert settings.to_layout(torch.rand(2, 3, 4, 5)).is_contiguous(memory_format=torch.channels_last)
    single = settings.to_layout(torch.rand(2, 1, 4, 5, 6))   # features innermost also here
    assert single.stride(1) == 1 and execution.is_channels_last(single)
    assert settings.to_layout(single) is single
    labels = torch.zeros(2, 3, 4, 5, dtype=torch.int64)
    assert settings.to_layout(labels) is labels
    flat = torch.rand(2, 3)
    assert settings.to_layout(flat) is flat


def test_graph_activations_stay_channels_last(restore_config):
    inp = nm.Input((None, 3, 4, 12, 12), 'b,f,z,x,y', name='raw')
    conv = nm.Conv(inp, 5, (1, 3, 3), (1, 2, 2))
    fn = conv.model.function([conv])
    x = fn.to_tensors(np.random.rand(2, 3, 4, 12, 12).astype(np.float32))
    config.memory_format = 'channels_last'
    assert fn(*x)[0].is_contiguous(memory_format=torch.channels_last_3d)
    config.memory_format = 'contiguous'
    assert fn(*x)[0].is_contiguous()


def test_experiment_config_applies_execution_settings(tmp_path, restore_config):
    path = tmp_path / 'exp.py'
    path.write_text("data_class = 'MNISTData'\nprecision = 'fp32'\nmemory_format = 'contiguous'\n"
                    "compile = 'off'\ndef create_model():\n    pass\n")
    exp = ExperimentConfig(path)
    exp.apply_execution_settings()
    assert (config.precision, config.memory_format, config.compile) == ('fp32', 'contiguous', 'off')
    path.write_text("data_class = 'MNISTData'\nprecision = 'fp64'\ndef create_model():\n    pass\n")
    with pytest.raises(ConfigError, match="exp.py: precision='fp64' is invalid"):
        ExperimentConfig(path)


def test_unset_experiment_keys_keep_the_global_settings(tmp_path, restore_config):
    path = tmp_path / 'exp.py'
    path.write_text("data_class = 'MNISTData'\ndef create_model():\n    pass\n")
    config.memory_format, precision = 'contiguous', config.precision
    ExperimentConfig(path).apply_execution_settings()
    assert config.memory_format == 'contiguous' and config.precision == precision


CONFIG_CHECKING_SETTINGS = """
data_class = ('batches.py', 'Ones')
precision = 'fp16'
memory_format = 'contiguous'

def create_model():
    import elektronn2.neuromancer as nm
    from elektronn2.config import config
    assert (config.precision, config.memory_format) == ('fp16', 'contiguous'), config
    inp = nm.Input((None, 2), 'b,f', name='raw')
    loss = nm.AggregateLoss(nm.SquaredLoss(nm.Perceptron(inp, 1), nm.Input((None, 1), 'b,f')))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, loss_node=loss)
    return model
"""


def test_cli_applies_the_settings_before_building_the_model(tmp_path, restore_config):
    from argparse import Namespace

    from elektronn2.training import cli
    (tmp_path / 'batches.py').write_text("class Ones:\n    def __init__(self, *nodes):\n"
                                         "        pass\n\n"
                                         "    def getbatch(self, batch_size, source='train'):\n"
                                         "        pass\n")
    (tmp_path / 'exp.py').write_text(CONFIG_CHECKING_SETTINGS)
    args = Namespace(config=str(tmp_path / 'exp.py'), resume=None, save_path=str(tmp_path / 'runs'))
    exp, model, *_ = cli.prepare(args)
    assert model.loss_node is not None and config.precision == 'fp16'


@pytest.mark.slow
def test_compiled_training_step_equals_eager(restore_config):
    inp = nm.Input((None, 2, 4, 12, 12), 'b,f,z,x,y', name='raw')
    probs = nm.Softmax(nm.Conv(nm.Conv(inp, 4, (1, 3, 3)), 2, 1, activation_func='lin'))
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss)
    x = np.random.rand(2, 2, 4, 12, 12).astype(np.float32)
    y = np.random.randint(0, 2, (2, 1, 4, 10, 10)).astype(np.int16)
    config.precision, model.mom = 'fp32', 0.0    # SGD without state
    state = {k: p.detach().clone() for k, p in model.all_params().items()}
    eager = [model.trainingstep(x, y, optimiser='SGD')[0] for _ in range(3)]
    with torch.no_grad():
        for key, param in model.all_params().items():
            param.copy_(state[key])
    config.compile = 'on'
    compiled = [model.trainingstep(x, y, optimiser='SGD')[0] for _ in range(3)]
    np.testing.assert_allclose(compiled, eager, rtol=1e-5)
