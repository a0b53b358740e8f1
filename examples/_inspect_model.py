"""What ``python examples/<config>.py`` does: build, test-run and draw the config's model.

Each example config ends with ``inspect_example(create_model, __file__)``; training
the same file is ``elektronn2-train examples/<config>.py``.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Callable, Sequence


def inspect_example(create_model: Callable, config_file: str,
                    argv: Sequence[str] | None = None) -> Path | None:
    """Build the model of an example, print its summary, run it once on random input and
    draw it (PNG, SVG, HTML). Returns the PNG, or None when drawing is not possible."""
    import elektronn2.neuromancer as nm
    from elektronn2.utils import MissingDependencyError, visualise_model
    name = Path(config_file).stem
    parser = argparse.ArgumentParser(prog=f"python {config_file}", description=(
        f"Build, test-run and draw the model of {name}; train it with "
        f"'elektronn2-train {config_file}'."))
    parser.add_argument('--out', default=Path(tempfile.gettempdir()) / 'elektronn2_examples',
                        type=Path, help='where the drawings go (default: %(default)s)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
    print(f"Building the model of {config_file} (train it with: elektronn2-train {config_file})")
    nm.model_manager.newmodel(name)
    model = create_model()
    print(model.summary())
    output, seconds = model.test_run_prediction()
    print(f"\nTest run on random input: prediction {output.shape} in {seconds:.2f} s")
    try:
        drawings = visualise_model(model, args.out / f"{name}_model-graph")
    except MissingDependencyError as err:
        print(f"\nThe model drawing was skipped: {err}")
        return None
    print(f"Model drawings: {', '.join(str(p) for p in drawings.values())}")
    return drawings.get('png')
