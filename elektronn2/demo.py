"""``elektronn2-demo``: build, summarise and train a small CNN on MNIST, then test it.

It runs the real trainer (as ``elektronn2-train`` would) on
:mod:`elektronn2.demo_config`: background batch workers, status line, history,
plots and checkpoints in a run directory, and reports the accuracy on the 10,000
MNIST test images at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from .console import plain
from .errors import Error


def test_accuracy(model, data, batch_size: int = 1000) -> float:
    """Fraction of the 10,000 MNIST test images the model classifies correctly."""
    n = len(data.arrays['test'][1])
    correct = 0
    for start in range(0, n, batch_size):
        images, labels = data.examples('test', start, start + batch_size)
        correct += int((model.predict(images).argmax(1) == labels[:, 0]).sum())
    return correct / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='elektronn2-demo', description=plain(__doc__.splitlines()[0]))
    parser.add_argument('--steps', type=int, default=1500, help='training steps (default 1500)')
    parser.add_argument('--save-path', help='parent directory of the run (default: a temporary one)')
    args = parser.parse_args(argv)
    from .training import cli
    from .training.trainer import Trainer
    cli.setup_logging(verbose=False)
    save_path = args.save_path or tempfile.mkdtemp(prefix='elektronn2-demo-')
    run_args = argparse.Namespace(config=str(Path(__file__).with_name('demo_config.py')),
                                  resume=None, save_path=save_path)
    with contextlib.ExitStack() as hold:    # the run directory's lock, held while training
        try:
            exp, model, data, preview, run_dir, state = cli.prepare(
                run_args, {'n_steps': args.steps}, hold=hold)
        except Error as err:
            print(f"elektronn2-demo: error: {err}", file=sys.stderr)
            return 2
        print(model.summary(), flush=True)
        print(f"\nTraining {args.steps} steps; run directory {run_dir}\n", flush=True)
        Trainer(exp, model, data, run_dir).run()
    print(f"\nTest accuracy on the 10,000 MNIST test images: {test_accuracy(model, data):.2%}")
    print(f"History, plots and checkpoints are in {run_dir}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
