"""elektronn2: design, train and apply neural networks for 2-D and 3-D image analysis."""
import logging

from .config import config
from .errors import ConfigError, DataError, Error, GraphError, ModelFileError, ShapeError

__version__ = '0.1.0'

logging.getLogger('elektronn2').addHandler(logging.NullHandler())

__all__ = ['ConfigError', 'DataError', 'Error', 'GraphError', 'ModelFileError', 'ShapeError',
           '__version__', 'config']
