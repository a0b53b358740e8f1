"""README.rst stays true: its Python example runs."""
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / 'README.rst'


def test_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r'\.\. code-block:: python\n\n((?:    .*\n|\n)+)', README.read_text())
    assert blocks
    namespace = {}
    for block in blocks:
        exec(compile('\n'.join(line[4:] for line in block.splitlines()), 'README.rst', 'exec'),
             namespace)
    assert namespace['dense'].shape == (2, 23, 172, 172)
    np.testing.assert_allclose(namespace['fast'].predict_dense(
        np.random.rand(1, 23, 200, 200).astype('float32'))[:, :, :4, :4].sum(0), 1, rtol=1e-5)
    assert (tmp_path / 'model.mdl').exists()
