"""elektronn2.utils stays light: optional and heavy modules load only on use."""
import subprocess
import sys

import pytest

import elektronn2.utils
from elektronn2.errors import Error
from elektronn2.utils.optional import MissingDependencyError, import_optional, require_program

HEAVY = ('matplotlib', 'graphviz', 'napari', 'dask', 'distributed', 'kimimaro', 'skimage',
         'psutil', 'elektronn2.utils.viewer', 'elektronn2.utils.queue')


def test_package_import_loads_no_heavy_module():
    code = ("import sys, elektronn2.utils; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


def test_names_are_exported_lazily():
    code = ("import sys, elektronn2.utils as u; t = u.Timer(); "
            "print(type(t).__module__, 'matplotlib' in sys.modules, "
            "'h5py' in sys.modules, 'elektronn2.utils.viewer' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    # ELEKTRONN2's Timer (check/summary) on top of utils.timer.Timer
    assert out.stdout.split() == ['elektronn2.utils.utils_basic', 'False', 'False', 'False']
    assert set(elektronn2.utils.__all__) <= set(dir(elektronn2.utils))
    for name in elektronn2.utils.__all__:
        # (once imported, the submodule cnncalculator takes the function's name; it is callable)
        assert getattr(elektronn2.utils, name).__name__.rpartition('.')[2] == name
    with pytest.raises(AttributeError, match='no attribute'):
        _ = elektronn2.utils.cnn_calculator_typo


def test_missing_optional_dependencies_say_how_to_install():
    with pytest.raises(MissingDependencyError, match=r"pip install not-a-package .*elektronn2\[viz\]"):
        import_optional('not_a_module_anywhere', 'not-a-package', 'viz', 'Testing')
    with pytest.raises(MissingDependencyError, match='apt-get install some-package'):
        require_program('not-a-program-anywhere', 'some-package')
    assert issubclass(MissingDependencyError, Error) and issubclass(MissingDependencyError, ImportError)
